import json
import subprocess
import sys

from typer.testing import CliRunner

from edgetune import __version__, pipeline
from edgetune.cli import app

from conftest import make_recipe

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


def test_train_prints_device_dtype_and_expected_tokens_per_s_before_training(tiny_base, demo_jsonl, tmp_path):
    from conftest import make_recipe
    recipe = tmp_path / "r.yaml"
    recipe.write_text(make_recipe(tiny_base, demo_jsonl, tmp_path / "runs", train={"max_steps": 2}).to_yaml())
    proc = subprocess.run([sys.executable, "-m", "edgetune", "train", "--recipe", str(recipe)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    device = next(i for i, line in enumerate(lines) if line.startswith("[train] cpu, "))
    expected = next(i for i, line in enumerate(lines) if line.startswith("[train] expected ~"))
    start = next(i for i, line in enumerate(lines) if line.startswith("[train] training 2 steps"))
    assert device < expected < start
    assert ("bf16 autocast" in lines[device]) or ("fp32: " in lines[device])  # the dtype and why
    assert "trained tokens/s (an estimate:" in lines[expected]


def test_an_empty_name_is_refused_like_any_bad_name(tmp_path):
    result = runner.invoke(app, ["train", "--name", "", "--data", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2
    assert "name '' must be letters" in result.output


def test_version_and_help_texts():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"edgetune {__version__}"
    out = runner.invoke(app, ["run", "--help"]).output
    assert "Run name" in out and "Base model: demo, gemma3-270m" in out and "Dataset: demo, a" in out


def test_data_inspect_maps_columns(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nwhat is 2+2,4\nwhat is 3+3,6\n")
    refused = runner.invoke(app, ["data", "inspect", str(path)])
    assert refused.exit_code == 2 and "map yours with data.columns" in refused.output
    mapped = runner.invoke(app, ["data", "inspect", str(path), "--columns", "instruction=question,output=answer"])
    assert mapped.exit_code == 0, mapped.output
    assert "what is 3+3" in mapped.output and "2 rows" in mapped.output
    bad = runner.invoke(app, ["data", "inspect", str(path), "--columns", "instr=question"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --columns: data.columns.instr is not one of")


def test_every_argument_and_option_of_every_verb_has_help():
    import typer.main
    group = typer.main.get_command(app)
    missing = []
    for name, command in group.commands.items():
        for sub_name, sub in getattr(command, "commands", {name: command}).items():
            missing += [f"{sub_name} {p.name}" for p in sub.params if not getattr(p, "help", None)]
    assert missing == []


def test_plain_edgetune_without_a_terminal_prints_help_and_fails():
    proc = subprocess.run([sys.executable, "-m", "edgetune"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Usage:" in proc.stderr and "needs a terminal" in proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr


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


def test_cli_ctrl_c_line():
    """Ctrl-C inside a command (typer would end it as a silent exit 130) prints where it stopped."""
    code = ("from edgetune import cli, pipeline\n"
            "def stop(*a, **k): raise KeyboardInterrupt('interrupted at step 8 of 12')\n"
            "pipeline.run = stop\ncli._load_recipe = lambda *a, **k: type('R', (), {'name': 'x', 'runs_dir': 'r'})\n"
            "cli._log_libraries = lambda *a, **k: None\nimport sys; sys.argv = ['edgetune', 'train']; cli.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted at step 8 of 12; run the same command to resume"
