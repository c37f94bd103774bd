import json
import subprocess
import sys

from typer.testing import CliRunner

from edgetune.cli import app

runner = CliRunner()


def test_help_lists_verbs_and_examples():
    out = runner.invoke(app, ["--help"]).output
    for verb in ("train", "run", "demo", "merge", "convert", "quantize", "smoke", "chat", "data"):
        assert verb in out
    assert "edgetune data inspect data.jsonl" in out


def test_data_inspect(tiny_base, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n" + '{"instruction": "x"}\n')
    result = runner.invoke(app, ["data", "inspect", str(path), "--tokenizer", str(tiny_base), "--skip-bad",
                                 "--template", "alpaca", "--max-length", "16"])
    assert result.exit_code == 0, result.output
    assert "format alpaca, 1 rows, 1 skipped" in result.output and "d.jsonl:2: missing field 'output'" in result.output
    assert "### Instruction:\nSay hi" in result.output and "template: alpaca" in result.output
    assert "suggested max_length: 64 (p99" in result.output
    result = runner.invoke(app, ["data", "inspect", str(path), "--tokenizer", str(tiny_base), "--skip-bad"])
    assert "template: chatml (the model's own chat template" in result.output  # auto: the base's own


def test_user_errors_are_one_line_without_traceback(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train: {rank: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "edgetune", "train", "--recipe", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: train.rank 0 must be at least 1"
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"instruction": "a", "output": 1}\n')
    proc = subprocess.run([sys.executable, "-m", "edgetune", "data", "inspect", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{bad}:1: field 'output' must be a string, got int" in proc.stderr


def test_run_prints_no_library_line_unless_debug(tiny_bos_base, demo_jsonl, tmp_path):
    """Library logs, Python warnings and llama.cpp's log go to runs/<name>/edgetune.log: the console
    has edgetune's own lines only ('[phase] ...'); --debug shows the rest as well."""
    import re

    from conftest import make_recipe
    recipe = tmp_path / "r.yaml"
    # the recipe of tests/test_pipeline.py, whose smoke verdict passes
    recipe.write_text(make_recipe(tiny_bos_base, demo_jsonl, tmp_path / "runs", data={"template": "alpaca"},
                                  train={"max_steps": 30}).to_yaml())
    ours = re.compile(r"\[(data|train|merge|convert|quantize|smoke)\] ")
    proc = subprocess.run([sys.executable, "-m", "edgetune", "run", "--recipe", str(recipe)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    foreign = [line for line in proc.stderr.splitlines() if line.strip() and not ours.match(line)]
    assert foreign == []
    assert "llama_" not in proc.stdout and "Warning" not in proc.stdout
    log = (tmp_path / "runs" / "t" / "edgetune.log").read_text()
    assert "llama_cpp: " in log  # routed there, not dropped
    (tmp_path / "runs" / "t" / "smoke.json").unlink()  # so that smoke runs again
    proc = subprocess.run([sys.executable, "-m", "edgetune", "--debug", "smoke", "--recipe", str(recipe)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(line.startswith("llama_context: ") for line in proc.stderr.splitlines())
