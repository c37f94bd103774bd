"""`edgetune runs` lists what the Runs screen shows, odd folders as rows; `edgetune chat` escapes a
model's control characters and keeps a run's conversation; the model card says how to serve."""
import json

import pytest
from typer.testing import CliRunner

from edgetune import chat as chat_mod
from edgetune import cli
from edgetune.errors import EdgetuneError
from edgetune.results import QuantResult
from edgetune.runs import RunFolder, gguf_of

from tui_fixtures import EMPTY_GGUF, make_run


def test_runs_lists_every_run_and_says_what_is_odd(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "good")
    make_run(runs, "broken", state="failed", smoke=False)
    (runs / "half").mkdir()
    (runs / "half" / "state.json").write_text('{"steps": ')
    (runs / "old").mkdir()
    (runs / "old" / "state.json").write_text(json.dumps({"train": {"fingerprint": "x", "seconds": 1}}))
    (runs / "not-a-run").mkdir()
    result = CliRunner().invoke(cli.app, ["runs", str(runs)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "BASE", "DATE", "STATE", "RECOMMENDED", "FILE", "TASK"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith(" ")}
    assert set(rows) == {"good", "broken", "half", "old"}
    assert rows["good"][4:] == ["done", "good-Q4_K_M.gguf", "FAIL", "good"]
    assert rows["broken"][4] == "failed" and "boom" in result.output
    assert rows["half"][-4] == "incomplete" and rows["old"][-4] == "incomplete"
    assert "no runs under" in CliRunner().invoke(cli.app, ["runs", str(tmp_path / "none")]).output


class ControlSession(chat_mod.Conversation):
    made = []

    def __init__(self, gguf, system="", threads=0):
        super().__init__(system)
        self.path = gguf
        self.template_name = "from the file"
        ControlSession.made.append(self)

    def _generate(self, history, **params):
        for piece in ("back\x08", "\ttab", "\x1b[31mred"):
            self.tokens += 1
            yield piece

    def close(self):
        pass


def test_cli_chat_escapes_control_characters_and_keeps_a_runs_conversation(monkeypatch, tmp_path):
    monkeypatch.setattr(chat_mod, "ChatSession", ControlSession)
    monkeypatch.setattr(cli, "_log_libraries", lambda *a, **k: None)
    folder = make_run(tmp_path / "runs", "r")
    result = CliRunner().invoke(cli.app, ["chat", str(folder.dir)], input="hi\n\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "back\\x08\\ttab\\e[31mred" in result.output and "\x1b" not in result.output and "\x08" not in result.output
    assert "[3 tokens," in result.output
    assert ControlSession.made[-1].path == folder.gguf("Q4_K_M")  # a run folder chats with its recommended file
    result = CliRunner().invoke(cli.app, ["chat", str(folder.gguf("Q4_K_M"))], input="/exit\n")
    assert "2 earlier messages" in result.output  # reopened with the run
    assert RunFolder.containing(folder.gguf("Q4_K_M")).dir == folder.dir
    result = CliRunner().invoke(cli.app, ["chat", str(folder.dir), "--new"], input="/exit\n")
    assert "earlier messages" not in result.output


def test_the_model_card_says_how_to_serve_it(tmp_path, monkeypatch):
    from edgetune import report
    from edgetune.inputs.recipe import from_dict
    from edgetune.measure import gguf_eval
    monkeypatch.setattr(gguf_eval, "eog_ids", lambda path: [2])  # the run's GGUF here is an empty stand-in

    class Tok:
        eos_token_id = 2

        def __len__(self):
            return 3

        def convert_ids_to_tokens(self, i):
            return "</s>"
    folder = make_run(tmp_path / "runs", "r")
    recipe = from_dict({"name": "r", "base": "demo", "runs_dir": str(tmp_path / "runs")})
    report.write_model_files(folder, folder.gguf("Q4_K_M"), Tok(), recipe, None)
    card = folder.model_card.read_text()
    assert f"edgetune serve {folder.dir}" in card
    assert "curl http://127.0.0.1:8000/v1/chat/completions" in card and '"model": "r"' in card


def test_chat_and_serve_open_a_run_or_a_file_by_one_rule(tmp_path):
    run = make_run(tmp_path, "r1")
    gguf, folder = gguf_of(run.dir)
    assert gguf == run.recommended_gguf() and folder.dir == run.dir
    assert gguf_of(gguf)[1].dir == run.dir  # a file of a run keeps its run (its chat.jsonl)
    loose = tmp_path / "loose.gguf"
    loose.write_bytes(b"GGUF")
    assert gguf_of(loose) == (loose, None)
    empty = make_run(tmp_path, "r2", gguf=False)
    with pytest.raises(EdgetuneError, match="r2: the run has no GGUF file yet"):
        gguf_of(empty.dir)
    (tmp_path / "plain").mkdir()
    with pytest.raises(EdgetuneError, match="plain: neither a .gguf file nor a run folder"):
        gguf_of(tmp_path / "plain")
    with pytest.raises(EdgetuneError, match="gone.gguf: no such file or run folder"):
        gguf_of(tmp_path / "gone.gguf")


def test_the_offered_file_passed_the_smoke_check_and_kept_the_fine_tune(tmp_path):
    run = make_run(tmp_path, "my-run")  # its smoke.json: F16 and Q8_0 passed, Q4_K_M failed
    run.gguf("Q8_0").write_bytes(EMPTY_GGUF + b"\0" * 64)
    run.gguf("F16").write_bytes(EMPTY_GGUF + b"\0" * 128)
    assert run.recommended_gguf() == run.gguf("Q8_0")  # not the smaller Q4_K_M that failed

    def row(label, gave_back):
        return {"label": label, "type": label, "kept": True, "gain_kept": 0.5 if gave_back else 1.0,
                "gave_back": gave_back}
    QuantResult.from_dict({"files": [row("Q8_0", True), row("Q4_K_M", False)]}).write(run.quant_json)
    assert run.recommended_gguf() == run.gguf("F16")  # Q8_0 gave back half of what training taught
    run.smoke_json.unlink()  # before the smoke step: the smallest kept file
    assert run.recommended_gguf() == run.gguf("Q4_K_M")
