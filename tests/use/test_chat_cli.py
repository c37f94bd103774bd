"""Console chat: a message may span lines (a blank line sends, a paste is taken whole); /exit,
Ctrl-D, /reset, /system TEXT; and no llama.cpp line on the console."""
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from edgetune import chat as chat_mod
from edgetune import cli
from edgetune.use.chat import Turn, read_turn


def lines_of(text):
    it = iter(text.split("\n"))

    def read_line(prompt):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None
    return read_line


def all_turns(read_line):
    turns = []
    while (t := read_turn(read_line)) is not None:
        turns.append(t)
    return turns


def test_a_blank_line_sends_a_message_of_several_lines():
    text = "### Instruction:\nsum these\n### Input:\n2 3\n\n\n\nsecond\n"
    assert all_turns(lines_of(text)) == [Turn("", "### Instruction:\nsum these\n### Input:\n2 3"),
                                         Turn("", "second")]


def test_a_paste_handed_over_whole_keeps_its_blank_lines():
    pasted = ["### Instruction:\nsum\n\n### Input:\n2 3", "", "/exit"]
    it = iter(pasted)
    assert read_turn(lambda prompt: next(it)) == Turn("", "### Instruction:\nsum\n\n### Input:\n2 3")


def test_commands_on_the_first_line():
    text = "/system be brief and kind\n/system\n/reset\n/help\n/quit\n/sytem x\n/usr/bin/env is what?\n\n"
    assert all_turns(lines_of(text)) == [
        Turn("/system", "be brief and kind"), Turn("/system", ""), Turn("/reset", ""), Turn("/help", ""),
        Turn("/exit", ""), Turn("/?", "/sytem"), Turn("", "/usr/bin/env is what?")]
    # inside a message a slash line is text
    assert read_turn(lines_of("look at\n/reset\n\n")) == Turn("", "look at\n/reset")


def test_end_of_input_sends_what_was_typed_then_ends():
    read_line = lines_of("no blank line after this")
    assert read_turn(read_line) == Turn("", "no blank line after this")
    assert read_turn(read_line) is None


class RecordingSession:
    """Stands in for llama.cpp: records what the CLI hands over."""
    made = []

    def __init__(self, gguf, system="", threads=0):
        self.system, self.template_name, self.last_stats = system, "from the file", ""
        self.sent, self.cleared, self.closed = [], 0, False
        RecordingSession.made.append(self)

    def send(self, text, **kw):
        self.sent.append((text, self.system))
        self.last_stats = "1 tokens, 1.0 tok/s"
        yield "ok"

    def clear(self):
        self.cleared += 1

    def close(self):
        self.closed = True


def test_cli_chat_messages_and_commands(monkeypatch, tmp_path):
    monkeypatch.setattr(chat_mod, "ChatSession", RecordingSession)
    monkeypatch.setattr(cli, "_log_libraries", lambda *a, **k: None)  # routing is tested in a subprocess
    RecordingSession.made.clear()
    typed = ("line one\nline two\n\n/system be brief\nsecond\n\n/reset\n/nope\n/help\n/system\nthird\n\n"
             "/exit\nnever sent\n\n")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # the session is a fake; the file must exist
    result = CliRunner().invoke(cli.app, ["chat", str(tmp_path / "m.gguf")], input=typed)
    assert result.exit_code == 0, result.output
    s = RecordingSession.made[0]
    assert s.sent == [("line one\nline two", ""), ("second", "be brief"), ("third", "")]
    assert s.cleared == 1 and s.closed
    assert "unknown command /nope" in result.output and "/system TEXT sets the system prompt" in result.output
    # Ctrl-D (end of input) quits too, with nothing sent
    RecordingSession.made.clear()
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # the session is a fake; the file must exist
    result = CliRunner().invoke(cli.app, ["chat", str(tmp_path / "m.gguf")], input="")
    assert result.exit_code == 0 and RecordingSession.made[0].sent == [] and RecordingSession.made[0].closed


@pytest.fixture(scope="module")
def tiny_gguf(tiny_base, tmp_path_factory):
    from edgetune.convert import convert_hf_to_gguf
    return convert_hf_to_gguf(tiny_base, tmp_path_factory.mktemp("chat") / "tiny-F16.gguf", "f16")


def test_terminal_paste_with_a_blank_line_is_one_message_and_no_llama_line(tiny_gguf, tmp_path):
    """On a real terminal (a pty): a bracketed paste holding a blank line is one turn, one reply;
    llama.cpp's log goes to the chat log, not the screen."""
    pytest.importorskip("readline")
    pid, fd = pty.fork()
    if pid == 0:  # the child: edgetune chat on the terminal
        os.environ.update(TERM="xterm", EDGETUNE_CACHE=str(tmp_path / "cache"))
        os.execv(sys.executable, [sys.executable, "-m", "edgetune", "chat", str(tiny_gguf), "--max-tokens", "4"])
    screen = b""

    def read_until(marker: bytes, count: int = 1, seconds: float = 180) -> None:
        nonlocal screen
        deadline = time.monotonic() + seconds
        while screen.count(marker) < count and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    screen += os.read(fd, 4096)
                except OSError:
                    return
    try:
        read_until(b"> ")
        os.write(fd, b"\x1b[200~the last word of\n\nred fox\x1b[201~\r")  # paste, then Enter
        read_until(b"... ")
        os.write(fd, b"\r")  # Enter on the empty line sends
        read_until(b"tok/s")
        read_until(b"> ", 2)
        os.write(fd, b"/exit\r")
        read_until(b"\x00", seconds=10)  # to the end
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    text = screen.decode(errors="replace")
    assert text.count("tok/s") == 1, text  # one reply: the blank line inside the paste did not send
    assert "llama" not in text and "ggml" not in text, text
    assert "llama_" in (tmp_path / "cache" / "logs" / "chat.log").read_text()


def test_chat_without_a_terminal_prints_no_library_line(tiny_gguf, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgetune", "chat", str(tiny_gguf), "--max-tokens", "4"],
                          input="hello\n\n", capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EDGETUNE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "llama" not in proc.stdout and "tok/s" in proc.stdout
