"""A run's results and what to do with them: the verdicts, the smoke table, the quantization sweep,
the serve panel, and the buttons Chat, Serve, Compare with F16, Output folder, Open report. The Run
screen shows it in its Results tab when the run ends; the Results screen shows a past run's.

The buttons are handled here; what a screen shows in its own status line (where the output folder
is, whether the report opened) comes to it as a `ResultsView.Note`."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Static

from edgetune import RunFolder, SmokeResult, verdict_lines

from ..display import report_opened, shown_path
from .quant_view import QuantView
from .serve_panel import ServePanel
from .smoke_table import SmokeTable

ACTIONS = {"chat": "Chat", "serve": "Serve", "compare": "Compare with F16", "folder": "Output folder",
           "report": "Open report"}


class ResultsView(Vertical):
    class Note(Message):
        """A line for the screen's status line."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, waiting: str = "", **kwargs):
        """waiting: what the verdict line says until `show`."""
        super().__init__(**kwargs)
        self.waiting = waiting
        self.folder: RunFolder | None = None
        self.smoke: SmokeResult | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="nav", id="result-actions"):  # first: reachable at 80x24
            for name, label in ACTIONS.items():
                yield Button(label, id=name, disabled=True)
        with VerticalScroll(id="result-body"):
            yield Static(self.waiting, id="accuracy")
            yield SmokeTable(id="smoke")
            yield QuantView(id="quant")
            yield ServePanel(id="serve-info")

    def show(self, folder: RunFolder, smoke: SmokeResult | None) -> None:
        """A run's results; the table starts on the recommended file, so Chat opens the file to use."""
        self.folder, self.smoke = folder, smoke
        recommended = folder.recommended_gguf()
        self.query_one("#accuracy", Static).update(
            "\n".join(verdict_lines(smoke)) if smoke else "no smoke-test results in this run folder")
        table = self.query_one(SmokeTable)
        table.display = smoke is not None
        if smoke:
            table.show(smoke.files)
            rows = [Path(f.path).name for f in smoke.files]
            if recommended is not None and recommended.name in rows:
                table.move_cursor(row=rows.index(recommended.name))
        self.query_one(QuantView).show(folder.optional(folder.quant_result))
        self.query_one(ServePanel).show_server_of(folder.dir)
        has_file = smoke is not None or recommended is not None
        usable = {"chat": has_file, "serve": has_file, "compare": bool(smoke and smoke.files), "folder": True,
                  "report": True}
        for name, ok in usable.items():
            self.query_one(f"#{name}", Button).disabled = not ok

    def selected(self) -> str | None:
        """The file Chat opens: the table's row, else (no smoke test) the recommended file."""
        table = self.query_one(SmokeTable)
        if table.display and table.row_count:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        recommended = self.folder.recommended_gguf() if self.folder else None
        return str(recommended) if recommended else None

    def chat(self) -> None:
        if not self.query_one("#chat", Button).disabled and (path := self.selected()):
            self.app.action_chat(path)

    def compare(self) -> None:
        """The first file (F16) beside the selected one, or beside the last when F16 is selected."""
        if self.smoke and self.smoke.files:
            first, selected = self.smoke.files[0].path, self.selected()
            self.app.action_chat(first, selected if selected != first else self.smoke.files[-1].path)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        name = event.button.id
        if name == "chat":
            self.chat()
        elif name == "compare":
            self.compare()
        elif name == "serve":
            self.query_one(ServePanel).toggle(self.folder.dir)
        elif name == "folder":
            self.post_message(self.Note(f"output folder: {shown_path(self.folder.gguf_dir)}/"))
        elif name == "report":
            self.post_message(self.Note("opening the report…"))
            self.open_report()

    @work(thread=True, exclusive=True, group="report")
    def open_report(self) -> None:
        """Off the UI thread: an older run's page is built first (matplotlib takes seconds on a busy CPU)."""
        self.post_message(self.Note(report_opened(self.folder)))
