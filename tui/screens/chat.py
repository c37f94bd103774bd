"""Chat with any GGUF on the CPU, streamed; or two GGUFs side by side on the same prompt."""
from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Static

from edgetune.errors import EdgetuneError


class Transcript(VerticalScroll):
    """One column of the conversation; the reply being streamed is the last Static."""

    def add(self, who: str, text: str = "") -> Static:
        line = Static(f"[b]{who}[/b] {text}", classes=f"msg msg-{who.rstrip(':')}")
        self.mount(line)
        self.scroll_end(animate=False)
        return line


class ChatScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+s", "stop", "Stop"),
                Binding("ctrl+l", "clear", "Clear"), Binding("ctrl+y", "copy", "Copy reply")]

    def __init__(self, gguf: str = ""):
        super().__init__()
        self.initial = gguf
        self.sessions: list = []
        self.replies: list[str] = []
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Input(value=self.initial, id="gguf", placeholder="model.gguf")
            yield Input(id="gguf2", placeholder="compare with… (optional)")
            yield Button("Load", id="load")
        with Horizontal(classes="row"):
            yield Input(id="system", placeholder="system prompt (optional)")
            yield Label("temp", classes="small-label")
            yield Input("0.7", id="temperature", classes="num")
            yield Label("top-p", classes="small-label")
            yield Input("0.95", id="top_p", classes="num")
            yield Label("max", classes="small-label")
            yield Input("256", id="max_tokens", classes="num")
        with Horizontal(id="transcripts"):
            yield Transcript(id="t0")
        yield Static("", id="error", classes="error")
        with Horizontal(classes="row"):
            yield Input(id="message", placeholder="type a message and press Enter")
            yield Button("Stop", id="stop")
            yield Button("Clear", id="clear")
            yield Button("Copy", id="copy")
        yield Footer()

    def on_mount(self) -> None:
        if self.initial:
            self.load()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = {"load": self.load, "stop": self.action_stop, "clear": self.action_clear,
                  "copy": self.action_copy}.get(event.button.id)
        if action:
            action()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "message":
            self.send(event.value)
        elif event.input.id in ("gguf", "gguf2"):
            self.load()

    def error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def load(self) -> None:
        paths = [self.query_one("#gguf", Input).value.strip(), self.query_one("#gguf2", Input).value.strip()]
        paths = [p for p in paths if p]
        if not paths:
            self.error("type the path of a .gguf file")
            return
        self.error("loading…")
        self._load(paths, self.query_one("#system", Input).value)

    @work(thread=True, exclusive=True, group="chat-load")
    def _load(self, paths: list[str], system: str) -> None:
        from edgetune.chat import ChatSession
        try:
            sessions = [ChatSession(p, system=system) for p in paths]
        except EdgetuneError as e:
            self.app.call_from_thread(self.error, str(e))
            return
        self.app.call_from_thread(self._loaded, sessions)

    async def _loaded(self, sessions) -> None:
        for s in self.sessions:
            s.close()
        self.sessions = sessions
        box = self.query_one("#transcripts", Horizontal)
        await box.remove_children()
        for i, s in enumerate(sessions):
            t = Transcript(id=f"t{i}")
            await box.mount(t)
            t.add("model:", f"{s.path.name} loaded (template: {s.template_name})")
        self.error("")
        self.query_one("#message", Input).focus()

    def _params(self) -> dict:
        try:
            return {"temperature": float(self.query_one("#temperature", Input).value),
                    "top_p": float(self.query_one("#top_p", Input).value),
                    "max_tokens": int(self.query_one("#max_tokens", Input).value)}
        except ValueError:
            raise EdgetuneError("chat: temperature and top-p must be numbers, max a whole number") from None

    def send(self, text: str) -> None:
        if not text.strip() or self.busy:
            return
        if not self.sessions:
            self.error("load a GGUF first")
            return
        try:
            params = self._params()
        except EdgetuneError as e:
            self.error(str(e))
            return
        self.error("")
        self.query_one("#message", Input).value = ""
        self.busy = True
        self.replies = [""] * len(self.sessions)
        for i, session in enumerate(self.sessions):
            t = self.query_one(f"#t{i}", Transcript)
            t.add("you:", text)
            self._stream(i, session, t.add("model:"), text, params)

    @work(thread=True, group="chat-stream")
    def _stream(self, i: int, session, line: Static, text: str, params: dict) -> None:
        try:
            for piece in session.send(text, **params):
                self.replies[i] += piece
                self.app.call_from_thread(line.update, f"[b]model:[/b] {_escape(self.replies[i])}")
        except Exception as e:
            self.app.call_from_thread(self.error, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
        self.app.call_from_thread(self._finished, i, line, session.last_stats)

    def _finished(self, i: int, line: Static, stats: str) -> None:
        line.update(f"[b]model:[/b] {_escape(self.replies[i])}\n[dim]{stats}[/dim]")
        if all(s.last_stats for s in self.sessions):
            self.busy = False

    def action_stop(self) -> None:
        for s in self.sessions:
            s.stop()
        self.busy = False

    def action_clear(self) -> None:
        for s in self.sessions:
            s.clear()
        for t in self.query(Transcript):
            t.remove_children()

    def action_copy(self) -> None:
        if self.replies:
            self.app.copy_to_clipboard(self.replies[0])
            self.error("reply copied")

    def action_back(self) -> None:
        self.action_stop()
        self.app.pop_screen()


def _escape(text: str) -> str:
    from rich.markup import escape
    return escape(text)
