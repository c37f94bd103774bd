"""A past run's results, reopened from the Runs screen: the verdicts, the smoke table, the
quantization sweep, and Chat / Serve with its files."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from edgetune import RunFolder, summarize, verdict_lines

from ..display import base_label, report_opened, shown_path
from ..widgets.quant_view import QuantView
from ..widgets.serve_panel import ServePanel
from ..widgets.smoke_table import SmokeTable


class ResultsScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+t", "chat", "Chat")]

    def __init__(self, folder: RunFolder):
        super().__init__()
        self.folder = folder

    def compose(self) -> ComposeResult:
        s = summarize(self.folder)
        yield Header()
        yield Static(f"run [b]{s.name}[/b]: {base_label(s.base) or '?'} on {base_label(s.data) or '?'}; {s.state}"
                     + (f" ({s.detail})" if s.detail else ""), id="run-title")
        with VerticalScroll():
            yield Static("", id="accuracy")
            yield SmokeTable(id="smoke")
            yield QuantView(id="quant")
            yield ServePanel(id="serve-info")
        yield Static("", id="error", classes="status")
        with Horizontal(classes="nav"):
            yield Button("Chat", id="chat", variant="primary")
            yield Button("Serve", id="serve")
            yield Button("Output folder", id="folder")
            yield Button("Open report", id="report")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        smoke = self.folder.optional(self.folder.smoke_result)
        self.query_one("#accuracy", Static).update(
            "\n".join(verdict_lines(smoke)) if smoke else "no smoke-test results in this run folder")
        if smoke:
            self.query_one("#smoke", SmokeTable).show(smoke.files)
        else:
            self.query_one("#smoke", SmokeTable).display = False
        self.query_one("#quant", QuantView).show(self.folder.optional(self.folder.quant_result))
        self.query_one(ServePanel).show_server_of(self.folder.dir)
        has_file = self.folder.recommended_gguf() is not None
        self.query_one("#chat", Button).disabled = self.query_one("#serve", Button).disabled = not has_file

    def _selected(self) -> str:
        table = self.query_one("#smoke", SmokeTable)
        if table.display and table.row_count:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(self.folder.recommended_gguf())

    def action_chat(self) -> None:
        if self.folder.recommended_gguf() is not None:
            self.app.action_chat(self._selected())

    def action_back(self) -> None:
        self.app.pop_screen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "chat":
            self.action_chat()
        elif event.button.id == "serve":
            self.query_one(ServePanel).toggle(self.folder.dir)
        elif event.button.id == "folder":
            self.query_one("#error", Static).update(f"output folder: {shown_path(self.folder.gguf_dir)}/")
        elif event.button.id == "report":
            self.query_one("#error", Static).update(report_opened(self.folder))
        elif event.button.id == "back":
            self.action_back()
