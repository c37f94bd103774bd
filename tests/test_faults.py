"""Interruptions and disk faults: a kill mid-training resumes, a full disk is one clear sentence."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetune.errors import EdgetuneError
from edgetune.runs import RunFolder

from conftest import make_recipe


def test_sigkill_during_training_resumes_from_the_last_checkpoint(tiny_base, demo_jsonl, tmp_path):
    r = make_recipe(tiny_base, demo_jsonl, tmp_path / "runs",
                    train={"max_steps": 40, "save_steps": 4, "logging_steps": 1, "eval_steps": 100})
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(r.to_yaml())
    cmd = [sys.executable, "-m", "edgetune", "train", "--recipe", str(recipe_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "runs" / "t"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("checkpoint-8/trainer_state.json")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "adapter").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*")
                    if (p / "trainer_state.json").exists())
    assert 8 <= killed_at < 40

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from checkpoint-{killed_at}" in done.stderr
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps[-1] == 40 and steps.count(1) == 1  # the resumed run did not start over
    assert RunFolder(run).train_result().steps == 40


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_full_disk_during_conversion_is_a_clear_error(tiny_base, small_disk):
    from edgetune.convert import convert_hf_to_gguf
    with pytest.raises(EdgetuneError) as e:
        convert_hf_to_gguf(tiny_base, small_disk / "model.gguf", "f32")
    assert "no space left on the device" in str(e.value) and "\n" not in str(e.value)
    assert list(small_disk.iterdir()) == []  # neither the final file nor the partial temp file


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_gguf_checks_only_raise_clear_errors(tmp_path, blob, magic):
    from edgetune.inputs.gguf_io import check_gguf_file
    path = tmp_path / "fuzz.gguf"
    path.write_bytes((b"GGUF\x03\x00\x00\x00" if magic else b"") + blob)
    try:
        check_gguf_file(path)
    except EdgetuneError as e:
        assert "fuzz.gguf" in str(e) and "\n" not in str(e)


def test_nan_loss_stops_training_with_a_clear_error(tiny_recipe, monkeypatch):
    import transformers

    from edgetune import train
    from edgetune.runs import RunFolder
    original = transformers.Trainer.log

    def poisoned(self, logs, *args, **kwargs):
        if "loss" in logs:
            logs["loss"] = float("nan")
        return original(self, logs, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "log", poisoned)
    with pytest.raises(EdgetuneError, match="the loss became NaN/inf at step"):
        train.train(tiny_recipe, RunFolder.of(tiny_recipe).dir)
    assert not (RunFolder.of(tiny_recipe).dir / "adapter").exists()
