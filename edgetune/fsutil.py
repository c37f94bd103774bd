"""Writes that never leave a half-written file at a final path: temp file, fsync, rename. The files
get the mode any tool would create them with (0666 less the umask), not mkstemp's private 0600, so
another user or a service (a model server, a web server) can read what edgetune wrote."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgetune.errors import EdgetuneError


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `final`; on success fsync it and rename it over `final`.

    On any error the temp file is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        free = shutil.disk_usage(final.parent).free
        # numpy's tofile reports a short write without an errno: a nearly empty disk says why.
        if e.errno in (errno.ENOSPC, errno.EDQUOT) or (e.errno is None and "written" in str(e)):
            raise EdgetuneError(f"{final}: no space left on the device ({free / 2**20:.1f} MiB free); "
                                "the partial file was removed") from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside `final`; on success it replaces `final` (the old one is moved
    aside first, so a crash leaves either the old or the new folder, never a mix). On any error
    the new folder is removed and `final` is untouched."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Libraries write into the folder too (safetensors' save_file creates its files 0600).
    mode = 0o666 & ~umask()
    for path in tmp.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: str | os.PathLike, obj) -> None:
    write_text(final, json.dumps(obj, indent=2, default=str) + "\n")


def cache_dir() -> Path:
    """Where edgetune keeps what it builds once (demo base model, imported GGUF bases)."""
    root = os.environ.get("EDGETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgetune"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_main_process() -> bool:
    """True except on the non-zero ranks of a multi-process (accelerate/torchrun) launch."""
    return int(os.environ.get("RANK", "0")) == 0
