"""Files edgetune writes: created as any tool creates them (the umask honoured), never half-written."""
import os
import stat

import torch
from safetensors.torch import save_file

from edgetune.fsutil import atomic_dir, write_text


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            write_text(d / "b.txt", "y")
            save_file({"w": torch.zeros(2)}, str(d / "adapter_model.safetensors"))  # safetensors writes 0600
        os.umask(0o027)
        write_text(tmp_path / "c.txt", "z")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d" / "b.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d" / "adapter_model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "c.txt").stat().st_mode) == 0o640
