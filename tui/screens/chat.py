"""Chat with any GGUF on the CPU, streamed; or two GGUFs side by side on the same prompt.

A reply streams from a worker thread as typed messages, at most FRAME_S apart: llama.cpp keeps the
CPU, the screen is redrawn ~10 times a second (a few tokens at a time), not once per token. Every
redraw takes CPU time from llama.cpp's threads, which wait for each other at every operation:
measured on Gemma 3 270M, 2 threads, 2 cores, each redraw costs 3-8 ms of the UI thread, and at
20 a second the TUI fell to 0.84x the tokens/s of `edgetune chat` (scripts/bench/chat.py). A message sent while a reply
streams is queued and shown as such; the chat commands (/reset, /system, /save, /help, /exit) are
the core's table, as in `edgetune chat`. A run's conversation is kept in its chat.jsonl and reopened.
"""
from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from edgetune import EdgetuneError, gguf_of
from edgetune import chat as chat_mod

from ..display import one_line, show_status
from ..messages import JobFinished, ReplyDone, ReplyPiece
from ..widgets.message_box import MessageBox
from ..widgets.transcript import Transcript
from .file_picker import FilePickerScreen

FRAME_S = 0.1  # a streaming reply updates the screen at most 10 times a second


class ChatScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Stop/Back"), Binding("ctrl+s", "stop", "Stop"),
                Binding("ctrl+r", "regenerate", "Regenerate"), Binding("ctrl+o", "edit_last", "Edit last"),
                Binding("ctrl+l", "clear", "Clear"), Binding("ctrl+y", "copy", "Copy reply")]

    def __init__(self, gguf: str = "", compare_with: str = ""):
        super().__init__()
        self.initial = (gguf, compare_with)
        self.sessions: list = []
        self.replies: list[str] = []
        self.reply_lines: dict[int, Static] = {}  # transcript index -> the line its reply streams into
        self.streaming = 0  # replies still coming
        self.queued: list[tuple[str, list[Static]]] = []  # messages sent while a reply streamed, and their lines

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Input(value=self.initial[0], id="gguf", placeholder="model.gguf or a run folder")
            yield Input(value=self.initial[1], id="gguf2", placeholder="compare with… (optional)")
            yield Button("Browse", id="browse")
            yield Button("Load", id="load")
        with Horizontal(classes="params"):
            yield Input(id="system", placeholder="system prompt (optional)", compact=True)
            yield Label("temp", classes="small-label")
            yield Input("0.7", id="temperature", classes="num", compact=True)
            yield Label("top-p", classes="small-label")
            yield Input("0.95", id="top_p", classes="num", compact=True)
            yield Label("max", classes="small-label")
            yield Input("256", id="max_tokens", classes="num", compact=True)
        with Horizontal(id="transcripts"):
            yield Transcript(id="t0")
        yield Static("load a GGUF file (from a run's gguf/ folder, or any)", id="error", classes="status")
        with Horizontal(id="compose"):
            yield MessageBox(id="message", placeholder="message: Enter sends, Ctrl+J new line, /help",
                             highlight_cursor_line=False)
            yield Button("Stop", id="stop")
            yield Button("Redo", id="regenerate")
            yield Button("Edit", id="edit")
        yield Footer()

    def on_mount(self) -> None:
        if self.initial[0]:
            self.load()
            self.query_one("#message", MessageBox).focus()  # typing goes to the message while it loads
        else:
            self.query_one("#gguf", Input).focus()

    def on_unmount(self) -> None:
        for s in self.sessions:
            s.stop()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = {"load": self.load, "browse": self.browse, "stop": self.action_stop,
                  "regenerate": self.action_regenerate, "edit": self.action_edit_last}.get(event.button.id)
        if action:
            action()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("gguf", "gguf2"):
            self.load()

    def on_message_box_submitted(self, event: MessageBox.Submitted) -> None:
        self.send(event.text)

    def status(self, message: str, error: bool = False) -> None:
        show_status(self, message, error)

    def transcripts(self) -> list[Transcript]:
        return [self.query_one(f"#t{i}", Transcript) for i in range(len(self.sessions))]

    def browse(self) -> None:

        def picked(path: str | None) -> None:
            if path:
                self.query_one("#gguf", Input).value = path
                self.load()
        start = self.query_one("#gguf", Input).value.strip() or ("runs" if Path("runs").is_dir() else ".")
        self.app.push_screen(FilePickerScreen("Choose a GGUF file", start, (".gguf",)), picked)

    def load(self) -> None:
        paths = [self.query_one(f"#{i}", Input).value.strip() for i in ("gguf", "gguf2")]
        paths = [p for p in paths if p]
        if not paths:
            self.status("type the path of a .gguf file", error=True)
            return
        if self.streaming:
            self.status("a reply is still coming: Stop it first", error=True)
            return
        self.status("loading…")
        self._load(paths, self.query_one("#system", Input).value)

    @work(thread=True, exclusive=True, group="chat-load")
    def _load(self, paths: list[str], system: str) -> None:
        sessions, note = [], ""
        try:
            for p in paths:
                gguf, folder = gguf_of(p)  # a run folder: its recommended file
                sessions.append(self.app.chat_session(str(gguf), system))
            if len(sessions) == 1 and folder is not None:  # one model: the run's conversation goes on
                try:
                    if sessions[0].open_log(folder.chat_log):
                        note = f"reopened the conversation in {folder.chat_log.name}; /reset forgets it"
                except EdgetuneError as e:
                    note = f"{e}; this conversation is not kept"
        except EdgetuneError as e:
            _close(sessions)
            self.post_message(JobFinished(None, str(e)))
            return
        except Exception as e:
            _close(sessions)
            self.post_message(JobFinished(None, one_line(e)))
            return
        if not self.post_message(JobFinished((sessions, note))):  # the screen is gone: nobody will use them
            _close(sessions)

    async def on_job_finished(self, message: JobFinished) -> None:
        if message.error is not None:
            self.status(message.error, True)
            return
        sessions, note = message.result
        _close(self.sessions)
        self.sessions = sessions
        self.queued = []
        box = self.query_one("#transcripts", Horizontal)
        await box.remove_children()
        for i, s in enumerate(sessions):
            t = Transcript(title=Path(s.path).name, id=f"t{i}")
            await box.mount(t)
            t.add("model:", f"{Path(s.path).name} loaded; prompt template {s.template_name}")
            for m in s.messages:  # a reopened conversation
                t.add("you:" if m["role"] == "user" else "model:", m["content"])
        if sessions and sessions[0].system:
            self.query_one("#system", Input).value = sessions[0].system
        self.status(note)
        self.query_one("#message", MessageBox).focus()

    def _params(self) -> dict:
        try:
            params = {"temperature": float(self.query_one("#temperature", Input).value),
                      "top_p": float(self.query_one("#top_p", Input).value),
                      "max_tokens": int(self.query_one("#max_tokens", Input).value)}
        except ValueError:
            raise EdgetuneError("chat: temp and top-p must be numbers, max a whole number") from None
        if params["temperature"] < 0 or not 0 < params["top_p"] <= 1 or params["max_tokens"] < 1:
            raise EdgetuneError("chat: temp >= 0, 0 < top-p <= 1 and max >= 1")
        return params

    def send(self, text: str) -> None:
        """A message (sent now, or queued behind the reply streaming) or a chat command."""
        if not text.strip():
            return
        command = chat_mod.parse_command(text)
        if command is not None:
            self.query_one("#message", MessageBox).clear()
            self.run_command(command)
            return
        if not self.sessions:
            self.status("load a GGUF first", error=True)
            return
        try:
            self._params()
        except EdgetuneError as e:
            self.status(str(e), error=True)
            return
        self.query_one("#message", MessageBox).clear()
        if self.streaming or self.queued:
            lines = [t.add("you (queued):", text) for t in self.transcripts()]
            self.queued.append((text, lines))
            self.status(f"{len(self.queued)} queued: sent when the reply ends (Ctrl+S stops the reply)")
            return
        self.start(text)

    def start(self, text: str, lines: list[Static] | None = None) -> None:
        params = self._params()
        self.status("")
        system = self.query_one("#system", Input).value
        for i, (session, t) in enumerate(zip(self.sessions, self.transcripts())):
            session.system = system  # takes effect on this turn, no reload needed
            if lines:
                t.show(lines[i], "you:", text)
            else:
                t.add("you:", text)
            self._stream_into(i, t, partial(session.send, text, **params), after=lines[i] if lines else None)

    def _stream_into(self, i: int, t: Transcript, reply, after: Static | None = None) -> None:
        if i == 0:
            self.replies = [""] * len(self.sessions)
            self.streaming = len(self.sessions)
        self.reply_lines[i] = t.add("model:", after=after)
        self._stream(i, self.sessions[i], reply)

    @work(thread=True, group="chat-stream")
    def _stream(self, i: int, session, reply) -> None:
        error, text, posted = "", "", -math.inf  # the first piece shows at once
        try:
            for piece in reply():
                text += piece
                now = time.monotonic()
                if now - posted >= FRAME_S:  # batch the screen updates: the CPU is llama.cpp's
                    self.post_message(ReplyPiece(i, text))
                    posted = now
        except EdgetuneError as e:
            error = str(e)
        except Exception as e:  # llama.cpp failing mid-reply: say so in one line, keep the screen
            error = one_line(e)
        # The user left while it streamed: no handler will close this session, so close it here.
        if not self.is_attached or not self.post_message(ReplyDone(i, session.last_stats, error, text)):
            session.close()

    def on_reply_piece(self, message: ReplyPiece) -> None:
        self.replies[message.index] = message.text
        self.query_one(f"#t{message.index}", Transcript).show_reply(self.reply_lines[message.index], message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        i, error = message.index, message.error
        self.replies[i] = message.text
        self.query_one(f"#t{i}", Transcript).show_reply(self.reply_lines[i], message.text, message.stats, done=True)
        self.streaming = max(0, self.streaming - 1)
        if error:
            self.status(error, error=True)
        if not self.streaming and self.queued:
            text, lines = self.queued.pop(0)
            self.start(text, lines)
            if self.queued:
                self.status(f"{len(self.queued)} queued: sent when the reply ends")

    def run_command(self, turn: chat_mod.Turn) -> None:
        if turn.command == "/exit":
            self.action_back(leave=True)
            return
        if turn.command in ("/reset", "/save") and self.streaming:
            self.status("a reply is still coming: Stop it first", error=True)
            return
        try:
            result = chat_mod.run_command(turn, self.sessions)
        except EdgetuneError as e:
            self.status(str(e), error=True)
            return
        if turn.command == "/reset":
            for t in self.query(Transcript):
                t.remove_children()
            self.replies, self.queued = [], []
        elif turn.command == "/system":
            self.query_one("#system", Input).value = turn.text
        if turn.command == "/help":
            self.query_one("#t0", Transcript).add("edgetune:", "chat commands\n" + "\n".join(result.lines))
        else:
            self.status(" ".join(result.lines), error=turn.command == "/?")

    def action_stop(self) -> None:
        for s in self.sessions:
            s.stop()

    def action_regenerate(self) -> None:
        if self.streaming:
            self.status("a reply is still coming: Stop it first", error=True)
            return
        if not self.sessions or not any(m["role"] == "user" for m in self.sessions[0].messages):
            self.status("nothing to regenerate yet: send a message first", error=True)
            return
        try:
            params = self._params()
        except EdgetuneError as e:
            self.status(str(e), error=True)
            return
        self.status("")
        for i, (session, t) in enumerate(zip(self.sessions, self.transcripts())):
            t.remove_last("model")
            self._stream_into(i, t, partial(session.regenerate, **params))

    def action_edit_last(self) -> None:
        if self.streaming:
            self.status("a reply is still coming: Stop it first", error=True)
            return
        texts = [s.take_back() for s in self.sessions]
        if not texts or texts[0] is None:
            self.status("nothing sent yet", error=True)
            return
        for t in self.transcripts():
            t.remove_last("model")
            t.remove_last("you")
        box = self.query_one("#message", MessageBox)
        box.text = texts[0]
        box.focus()
        self.status("edit the message; Enter sends it again")

    def action_clear(self) -> None:
        self.run_command(chat_mod.Turn("/reset", ""))

    def action_copy(self) -> None:
        if self.replies and self.replies[0]:
            self.app.copy_to_clipboard(self.replies[0])
            self.status("last reply copied to the clipboard")

    def action_back(self, leave: bool = False) -> None:
        """Escape stops a reply that is coming; otherwise (or /exit) it leaves the chat."""
        if self.streaming and not leave:
            self.action_stop()
            self.status("stopped")
            return
        self.action_stop()
        if not self.streaming:  # else each stream closes its session when it ends
            _close(self.sessions)
            self.sessions = []
        self.app.pop_screen()


def _close(sessions: list) -> None:
    for s in sessions:
        close = getattr(s, "close", None)
        if close:
            close()
