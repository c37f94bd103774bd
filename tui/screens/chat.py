"""Chat with any GGUF on the CPU, streamed; or two GGUFs side by side on the same prompt."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from edgetune.errors import EdgetuneError

from ..display import one_line, show_status
from ..messages import JobFinished, ReplyDone, ReplyPiece
from ..widgets.message_box import MessageBox
from ..widgets.transcript import Transcript
from .file_picker import FilePickerScreen


class ChatScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+s", "stop", "Stop"),
                Binding("ctrl+l", "clear", "Clear"), Binding("ctrl+y", "copy", "Copy reply")]

    def __init__(self, gguf: str = "", compare_with: str = ""):
        super().__init__()
        self.initial = (gguf, compare_with)
        self.sessions: list = []
        self.replies: list[str] = []
        self.reply_lines: dict[int, Static] = {}  # transcript index -> the line its reply streams into
        self.streaming = 0  # replies still coming

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Input(value=self.initial[0], id="gguf", placeholder="model.gguf")
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
            yield MessageBox(id="message", placeholder="message: Enter sends, Ctrl+J new line",
                             highlight_cursor_line=False)
            yield Button("Stop", id="stop")
            yield Button("Clear", id="clear")
            yield Button("Copy", id="copy")
        yield Footer()

    def on_mount(self) -> None:
        if self.initial[0]:
            self.load()
        else:
            self.query_one("#gguf", Input).focus()

    def on_unmount(self) -> None:
        for s in self.sessions:
            s.stop()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = {"load": self.load, "browse": self.browse, "stop": self.action_stop,
                  "clear": self.action_clear, "copy": self.action_copy}.get(event.button.id)
        if action:
            action()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("gguf", "gguf2"):
            self.load()

    def on_message_box_submitted(self, event: MessageBox.Submitted) -> None:
        self.send(event.text)

    def status(self, message: str, error: bool = False) -> None:
        show_status(self, message, error)

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
        sessions = []
        try:
            for p in paths:
                sessions.append(self.app.chat_session(p, system))
        except EdgetuneError as e:
            _close(sessions)
            self.post_message(JobFinished(None, str(e)))
            return
        except Exception as e:
            _close(sessions)
            self.post_message(JobFinished(None, one_line(e)))
            return
        if not self.post_message(JobFinished(sessions)):  # the screen is gone: nobody will use them
            _close(sessions)

    async def on_job_finished(self, message: JobFinished) -> None:
        if message.error is not None:
            self.status(message.error, True)
            return
        sessions = message.result
        _close(self.sessions)
        self.sessions = sessions
        box = self.query_one("#transcripts", Horizontal)
        await box.remove_children()
        for i, s in enumerate(sessions):
            t = Transcript(title=Path(s.path).name, id=f"t{i}")
            await box.mount(t)
            t.add("model:", f"{Path(s.path).name} loaded; prompt template {s.template_name}")
        self.status("")
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
        if not text.strip() or self.streaming:
            return
        if not self.sessions:
            self.status("load a GGUF first", error=True)
            return
        try:
            params = self._params()
        except EdgetuneError as e:
            self.status(str(e), error=True)
            return
        self.status("")
        self.query_one("#message", MessageBox).clear()
        system = self.query_one("#system", Input).value
        self.replies = [""] * len(self.sessions)
        self.streaming = len(self.sessions)
        for i, session in enumerate(self.sessions):
            session.system = system  # takes effect on this turn, no reload needed
            t = self.query_one(f"#t{i}", Transcript)
            t.add("you:", text)
            self.reply_lines[i] = t.add("model:")
            self._stream(i, session, text, params)

    @work(thread=True, group="chat-stream")
    def _stream(self, i: int, session, text: str, params: dict) -> None:
        error, reply = "", ""
        try:
            for piece in session.send(text, **params):
                reply += piece
                self.post_message(ReplyPiece(i, reply))
        except Exception as e:  # llama.cpp failing mid-reply: say so in one line, keep the screen
            error = one_line(e)
        # The user left while it streamed: no handler will close this session, so close it here.
        if not self.is_attached or not self.post_message(ReplyDone(i, session.last_stats, error)):
            session.close()

    def on_reply_piece(self, message: ReplyPiece) -> None:
        self.replies[message.index] = message.text
        self.query_one(f"#t{message.index}", Transcript).show_reply(self.reply_lines[message.index], message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        i, error = message.index, message.error
        self.query_one(f"#t{i}", Transcript).show_reply(self.reply_lines[i], self.replies[i], message.stats)
        self.streaming = max(0, self.streaming - 1)
        if error:
            self.status(error, error=True)

    def action_stop(self) -> None:
        for s in self.sessions:
            s.stop()

    def action_clear(self) -> None:
        if self.streaming:
            self.status("a reply is still coming: Stop it first", error=True)
            return
        for s in self.sessions:
            s.clear()
        for t in self.query(Transcript):
            t.remove_children()
        self.replies = []

    def action_copy(self) -> None:
        if self.replies and self.replies[0]:
            self.app.copy_to_clipboard(self.replies[0])
            self.status("last reply copied to the clipboard")

    def action_back(self) -> None:
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
