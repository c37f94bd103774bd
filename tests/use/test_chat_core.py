"""The chat core both the console and the TUI use: one table of commands, control characters
escaped, regenerate / edit-and-resend, a run's conversation kept as JSONL, max_tokens exact."""
import json

import pytest

from edgetune import chat as chat_mod
from edgetune.errors import EdgetuneError
from edgetune.runs import RunFolder
from edgetune.use.chat import Turn, parse_command, run_command, shown

from tui_fixtures import FakeChatSession


def test_control_characters_are_shown_escaped():
    assert shown("a\x08b\tc\x1b[2Jd\r\ne\x7f\x9b") == "a\\x08b\\tc\\e[2Jd\\r\ne\\x7f\\x9b"
    assert shown("plain text\nand ünïcode") == "plain text\nand ünïcode"


def test_one_command_table():
    assert parse_command("/reset") == Turn("/reset", "")
    assert parse_command("  /system be brief ") == Turn("/system", "be brief")
    assert parse_command("/save out.jsonl") == Turn("/save", "out.jsonl")
    assert parse_command("/quit") == Turn("/exit", "")
    assert parse_command("/nope") == Turn("/?", "/nope")
    assert parse_command("/usr/bin/env what?") is None and parse_command("hello") is None
    assert parse_command("/reset\nand more") is None  # a message of several lines is text
    s = FakeChatSession("m.gguf")
    assert run_command(Turn("/exit", ""), [s]).exit
    assert run_command(Turn("/system", "be brief"), [s]).lines == ["[system prompt set]"] and s.system == "be brief"
    help_lines = run_command(Turn("/help", ""), [s]).lines
    assert [line.split()[0] for line in help_lines] == list(chat_mod.COMMANDS)


def test_regenerate_and_take_back(tmp_path):
    s = FakeChatSession("m.gguf")
    assert "".join(s.send("first")) == "m says: first"
    assert "".join(s.send("second")) == "m says: second"
    assert "".join(s.regenerate()) == "m says: second"
    assert [m["content"] for m in s.messages] == ["first", "m says: first", "second", "m says: second"]
    assert s.sent == ["first", "second", "second"]  # the model saw the same history again
    assert s.take_back() == "second"
    assert [m["content"] for m in s.messages] == ["first", "m says: first"]
    s.clear()
    assert s.take_back() is None
    with pytest.raises(EdgetuneError, match="nothing to regenerate"):
        list(s.regenerate())


def test_a_runs_conversation_is_kept_and_reopened(tmp_path):
    folder = RunFolder(tmp_path / "r")
    folder.dir.mkdir()
    folder.state_json.write_text("{}")
    s = FakeChatSession("m.gguf", system="be brief")
    assert s.open_log(folder.chat_log) == 0
    list(s.send("hello"))
    records = [json.loads(line) for line in folder.chat_log.read_text().splitlines()]
    assert records[0] == {"system": "be brief"} and records[1] == {"role": "user", "content": "hello"}
    assert records[2]["role"] == "assistant" and records[2]["tokens"] == 3 and records[2]["file"] == "m.gguf"
    again = FakeChatSession("m.gguf")
    assert again.open_log(folder.chat_log) == 2 and again.system == "be brief"
    list(again.send("more"))
    assert again.sent == ["more"] and len(again.messages) == 4
    assert run_command(Turn("/save", str(tmp_path / "copy.jsonl")), [again]).lines[0].startswith("[conversation saved")
    assert (tmp_path / "copy.jsonl").read_text() == folder.chat_log.read_text()
    run_command(Turn("/reset", ""), [again])
    assert folder.chat_log.read_text().splitlines() == ['{"system": "be brief"}']
    folder.chat_log.write_text('{"system": ""}\nnot json\n')
    with pytest.raises(EdgetuneError, match=r"chat.jsonl:2: not JSON"):
        FakeChatSession("m.gguf").open_log(folder.chat_log)


@pytest.fixture(scope="module")
def tiny_gguf(tiny_base, tmp_path_factory):
    from edgetune.convert import convert_hf_to_gguf
    return convert_hf_to_gguf(tiny_base, tmp_path_factory.mktemp("chatcore") / "tiny-F16.gguf", "f16")


def test_max_tokens_is_exact(tiny_gguf):
    """The reply has max_tokens tokens, as llama.cpp counts them (the stream's chunks are not tokens:
    counting them said 201 for 200)."""
    s = chat_mod.ChatSession(tiny_gguf, threads=2)
    try:
        for n in (5, 16):
            s.clear()
            reply = "".join(s.send("the last word of red fox tiger is", temperature=0.0, max_tokens=n))
            whole = s.llm.create_chat_completion(messages=[{"role": "user", "content": "the last word of red fox tiger is"}],
                                                 temperature=0.0, max_tokens=n)
            assert reply == whole["choices"][0]["message"]["content"]
            assert s.last_stats.startswith(f"{whole['usage']['completion_tokens']} tokens,")
            assert s.messages[-1]["tokens"] == whole["usage"]["completion_tokens"] <= n
    finally:
        s.close()
