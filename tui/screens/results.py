"""A past run's results, reopened from the Runs screen: the verdicts, the smoke table, the
quantization sweep, and Chat / Serve with its files."""
from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from edgetune import RunFolder, summarize

from ..display import base_label
from ..widgets.results_view import ResultsView
from ..widgets.smoke_table import SmokeTable


class ResultsScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+t", "chat", "Chat")]

    def __init__(self, folder: RunFolder):
        super().__init__()
        self.folder = folder

    def compose(self) -> ComposeResult:
        s = summarize(self.folder)
        yield Header()
        where = f"{base_label(s.base) or '?'} on {base_label(s.data) or '?'}; {s.state}"
        yield Static(f"run [b]{escape(s.name)}[/b]: {escape(where)}" + (f" ({escape(s.detail)})" if s.detail else ""),
                     id="run-title")
        yield ResultsView()
        yield Static("", id="error", classes="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ResultsView).show(self.folder, self.folder.optional(self.folder.smoke_result))
        table = self.query_one(SmokeTable)
        if table.display:
            table.focus()

    def on_results_view_note(self, message: ResultsView.Note) -> None:
        self.query_one("#error", Static).update(message.text)

    def action_chat(self) -> None:
        self.query_one(ResultsView).chat()

    def action_back(self) -> None:
        self.app.pop_screen()
