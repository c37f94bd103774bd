"""Rough edges a new user hit in the CLI and the core (issue 24): names, versions, no terminal,
file modes, empty run folders, interrupted and resumed training, tensor types that cannot fit."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetune import __version__, pipeline
from edgetune.cli import app
from edgetune.errors import EdgetuneError
from edgetune.events import duration
from edgetune.fsutil import atomic_dir, write_text

from conftest import make_recipe

runner = CliRunner()


def test_an_empty_name_is_refused_like_any_bad_name(tmp_path):
    result = runner.invoke(app, ["train", "--name", "", "--data", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2
    assert "name '' must be letters" in result.output


def test_version_and_help_texts():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"edgetune {__version__}"
    out = runner.invoke(app, ["run", "--help"]).output
    assert "Run name" in out and "Base model: demo, gemma3-270m" in out and "Dataset: demo, a" in out


def test_plain_edgetune_without_a_terminal_prints_help_and_fails():
    proc = subprocess.run([sys.executable, "-m", "edgetune"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Usage:" in proc.stderr and "needs a terminal" in proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr


def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            write_text(d / "b.txt", "y")
        os.umask(0o027)
        write_text(tmp_path / "c.txt", "z")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d" / "b.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "c.txt").stat().st_mode) == 0o640


def test_durations_keep_a_unit_and_are_never_zero():
    assert duration(0.004) == "4 ms" and duration(0.0) == "<1 ms"
    assert duration(35.0) == "35.0 s" and duration(725) == "12m05s"


def test_bad_inputs_leave_no_run_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    missing = make_recipe("demo", tmp_path / "missing.jsonl", runs, name="missing")
    with pytest.raises(EdgetuneError, match="missing.jsonl: no such file"):
        pipeline.run(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("instruction,output\na,b,c\n")
    with pytest.raises(EdgetuneError, match="bad.csv:2: 3 cells for 2 columns"):
        pipeline.run(make_recipe("demo", bad, runs, name="badcsv"))
    assert not runs.exists() or list(runs.iterdir()) == []
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "--name", "badcsv", "--data", str(bad)])
    assert result.exit_code == 2 and "3 cells for 2 columns" in result.output
    assert not Path("runs").exists()


def test_too_few_steps_are_warned_about_before_the_run(tmp_path):
    rows = tmp_path / "d.jsonl"
    rows.write_text("".join(json.dumps({"instruction": f"reverse w{i}", "output": f"{i}w"}) + "\n" for i in range(57)))
    recipe = make_recipe("demo", rows, tmp_path / "runs", train={"batch_size": 16, "grad_accum": 2, "epochs": 3,
                                                                 "max_steps": -1})
    events = []
    pipeline.check_inputs(recipe, events.append)
    (warning,) = [e.message for e in events]
    assert warning.startswith("warning: 51 training rows at batch 16 x accum 2, 3 epochs give only 6 optimizer steps")
    assert "try train.batch_size 4 with train.grad_accum 1 (39 steps)" in warning
    assert not (tmp_path / "runs").exists()


def test_tensor_types_that_cannot_fit_are_refused_or_skipped_never_aborted(tiny_base, tmp_path):
    """Q2_K needs rows that are multiples of 256; the tiny base's are 64 wide (Gemma 3 270M's 640):
    llama.cpp would abort the process (GGML_ASSERT). Refused in one line before training, skipped
    by the sweep with a log line, refused by quantize before llama.cpp is asked."""
    from edgetune import sweep
    from edgetune.convert import convert_hf_to_gguf
    from edgetune.quantize import predicted_size, quantize
    from edgetune.recipe import ExportSpec

    recipe = make_recipe(tiny_base, tmp_path / "d.jsonl", tmp_path / "runs",
                         export={"quants": ["auto"], "auto_embedding_types": ["default", "Q2_K"]})
    with pytest.raises(EdgetuneError) as e:
        sweep.check_embedding_types(recipe, 64)
    assert str(e.value).endswith("Q2_K cannot be used with " + str(tiny_base) + ": token_embd.weight has rows of 64 "
                                 "values and Q2_K needs a multiple of 256; types that fit: Q8_0, Q5_1, Q5_0, Q4_1, "
                                 "Q4_0, IQ4_NL")
    sweep.check_embedding_types(recipe, 256)  # fits: no error
    f16 = convert_hf_to_gguf(tiny_base, tmp_path / "t-F16.gguf", "f16")
    with pytest.raises(EdgetuneError, match="token_embd.weight has rows of 64 values and Q2_K needs a multiple of 256"):
        quantize(f16, tmp_path / "t-Q4_K_M.gguf", "Q4_K_M", token_embedding_type="Q2_K")
    with pytest.raises(EdgetuneError, match="rows of 64"):
        predicted_size(f16, "Q4_0", token_embedding_type="Q2_K", output_tensor_type="Q2_K")
    assert not (tmp_path / "t-Q4_K_M.gguf").exists()
    events = []
    cands, _ = sweep.candidates(f16, ExportSpec(auto_types=["Q8_0", "Q4_0"], auto_embedding_types=["default", "Q2_K",
                                                                                                   "Q4_0"]),
                                None, events.append)
    assert {c.embedding for c in cands} <= {"default", "Q4_0"} and cands
    assert any("embedding type Q2_K left out: token_embd.weight has rows of 64" in e.message for e in events)


def test_ctrl_c_says_the_step_and_the_resumed_result_counts_all_training(tiny_recipe):
    """Ctrl-C (a KeyboardInterrupt inside the trainer) ends with 'interrupted at step N', the run is
    marked interrupted, and after the resume train.json counts every part: steps, seconds, parts."""
    from edgetune.events import TrainMetrics
    from edgetune.runs import RunFolder

    def ctrl_c_at_step_8(e):
        if isinstance(e, TrainMetrics) and e.step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as e:
        pipeline.run(tiny_recipe, ctrl_c_at_step_8, until="train")
    assert str(e.value) == "interrupted at step 8 of 12 (last checkpoint: step 6)"
    folder = RunFolder.of(tiny_recipe)
    state = folder.state()
    assert state.outcome == "interrupted" and state.step == "train" and state.error.startswith("interrupted at step 8")
    first = json.loads(folder.train_parts.read_text())
    assert [p["step"] for p in first] == [8]
    pipeline.run(tiny_recipe, until="train")
    result = folder.train_result()
    parts = json.loads(folder.train_parts.read_text())
    assert result.steps == 12 and result.parts == 2 and [p["step"] for p in parts] == [8, 12]
    assert result.seconds == pytest.approx(sum(p["seconds"] for p in parts), abs=0.11)
    assert result.seconds >= first[0]["seconds"]


def test_cli_ctrl_c_line():
    """Ctrl-C inside a command (typer would end it as a silent exit 130) prints where it stopped."""
    code = ("from edgetune import cli, pipeline\n"
            "def stop(*a, **k): raise KeyboardInterrupt('interrupted at step 8 of 12')\n"
            "pipeline.run = stop\ncli._load_recipe = lambda *a, **k: type('R', (), {'name': 'x', 'runs_dir': 'r'})\n"
            "cli._log_libraries = lambda *a, **k: None\nimport sys; sys.argv = ['edgetune', 'train']; cli.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted at step 8 of 12; run the same command to resume"


def test_data_columns_map_the_files_own_names(tmp_path):
    from edgetune import data
    from edgetune.recipe import from_dict

    csv_file = tmp_path / "qa.csv"
    csv_file.write_text("question,answer,notes\nreverse cat,tac,x\nreverse dog,god,\n")
    with pytest.raises(EdgetuneError, match="cannot tell the format .* map yours with data.columns"):
        data.load_dataset(csv_file)
    ds = data.load_dataset(csv_file, columns={"instruction": "question", "output": "answer"})
    assert ds.format == "alpaca" and ds.rows[1].record["instruction"] == "reverse dog"
    assert ds.rows[1].record["output"] == "god"
    with pytest.raises(EdgetuneError) as e:
        data.load_dataset(csv_file, columns={"instruction": "prompt", "output": "answer"})
    assert str(e.value) == (f"{csv_file}: data.columns.instruction is 'prompt', which is not a column of this file "
                            "(its columns: question, answer, notes)")
    gaps = tmp_path / "gaps.jsonl"
    gaps.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n" + json.dumps({"question": "c"}) + "\n")
    with pytest.raises(EdgetuneError, match=r"gaps.jsonl:2: missing field 'answer' \(data.columns.output\)"):
        data.load_dataset(gaps, columns={"instruction": "question", "output": "answer"})
    assert data.suggest_columns(["question", "answer", "notes"]) == {"instruction": "question", "output": "answer"}
    assert data.suggest_columns(["instruction", "input", "output"]) == {}

    share = tmp_path / "sharegpt.jsonl"
    share.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}))
    ds = data.load_dataset(share, columns={"messages": "conversations", "role_tag": "from", "content_tag": "value",
                                           "user_tag": "human", "assistant_tag": "gpt"})
    assert ds.format == "chat"
    assert ds.rows[0].record["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]

    assert from_dict({"data": {"columns": {"instruction": "question"}}}).data.columns == {"instruction": "question"}
    with pytest.raises(EdgetuneError, match="data.columns.question is not one of instruction, input, output"):
        from_dict({"data": {"columns": {"question": "instruction"}}})
    with pytest.raises(EdgetuneError, match=r"data.columns: expected a mapping"):
        from_dict({"data": {"columns": "question"}})
