"""The runs under runs_dir, newest first (where the TUI opens): open one's results, chat with or
serve its recommended file, resume or rerun it, delete it; or start a new run with the wizard.
A half-written folder or one from another version is a row that says so."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Static

from edgetune import EdgetuneError, RunSummary, list_runs

from ..display import base_label
from ..widgets.serve_panel import ServePanel
from .base_model import BaseModelScreen
from .confirm import ConfirmScreen
from .results import ResultsScreen
from .run import RunScreen

COLUMNS = ("name", "base", "date", "state", "recommended", "file", "task")


class RunsScreen(Screen):
    home = True  # the wizard's first step goes back here
    BINDINGS = [Binding("n", "new", "New run"), Binding("o", "open", "Open"), Binding("c", "chat", "Chat"),
                Binding("s", "serve", "Serve"), Binding("r", "resume", "Resume/Rerun"),
                Binding("d,delete", "delete", "Delete"), Binding("f5", "refresh", "Refresh", show=False)]

    def __init__(self, runs_dir: str | Path):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.rows: list[RunSummary] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Runs in {self.runs_dir}/", classes="title", id="runs-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail", classes="status")
        yield ServePanel(id="serve-info")
        yield Static("", id="error", classes="status")
        with Horizontal(classes="nav", id="runs-nav"):
            yield Button("New run", id="new", variant="primary")
            yield Button("Open", id="open")
            yield Button("Chat", id="chat")
            yield Button("Serve", id="serve")
            yield Button("Resume", id="resume")
            yield Button("Delete", id="delete", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        table = self.query_one(DataTable)
        selected = self.selected()
        self.rows = list_runs(self.runs_dir)
        table.clear()
        for r in self.rows:
            table.add_row(r.name, base_label(r.base) if r.base else "?", r.date, r.state,
                          r.recommended.name if r.recommended else "—", r.file_verdict or "—",
                          r.task_verdict or "—", key=str(r.folder.dir))
        dirs = [r.folder.dir for r in self.rows]
        if selected is not None and selected.folder.dir in dirs:  # the same run stays selected
            table.move_cursor(row=dirs.index(selected.folder.dir))
        if not self.rows:
            self.query_one("#detail", Static).update(f"no runs under {self.runs_dir}/ yet: New run (n) starts the wizard")
        self.show_selected()
        (table if self.rows else self.query_one("#new", Button)).focus()

    def selected(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not self.rows or table.row_count == 0:
            return None
        return self.rows[min(table.cursor_row, len(self.rows) - 1)]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def show_selected(self) -> None:
        r = self.selected()
        for name in ("open", "chat", "serve", "resume", "delete"):
            self.query_one(f"#{name}", Button).disabled = r is None
        if r is None:
            return
        self.query_one("#chat", Button).disabled = self.query_one("#serve", Button).disabled = r.recommended is None
        self.query_one("#resume", Button).label = "Rerun" if r.state == "done" else "Resume"
        self.query_one("#resume", Button).disabled = r.state == "unreadable" or not r.folder.recipe_yaml.is_file()
        self.query_one("#detail", Static).update(
            f"{r.state}" + (f": {r.detail}" if r.detail else "") + f"  ({r.folder.dir})")
        self.query_one(ServePanel).show_server_of(r.folder.dir)

    def error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def action_new(self) -> None:
        self.app.push_screen(BaseModelScreen())

    def action_open(self) -> None:
        if (r := self.selected()) is not None:
            self.app.push_screen(ResultsScreen(r.folder))

    def action_chat(self) -> None:
        r = self.selected()
        if r is not None and r.recommended is not None:
            self.app.action_chat(str(r.recommended))
        elif r is not None:
            self.error(f"{r.name}: no GGUF file yet")

    def action_serve(self) -> None:
        r = self.selected()
        if r is not None and r.recommended is not None:
            self.query_one(ServePanel).toggle(r.folder.dir)
        elif r is not None:
            self.error(f"{r.name}: no GGUF file yet")

    def action_resume(self) -> None:
        """Run the recipe again: finished steps are skipped, training resumes from its checkpoint."""
        r = self.selected()
        if r is None:
            return
        try:
            recipe = r.folder.recipe()
        except EdgetuneError as e:
            self.error(str(e))
            return
        recipe.runs_dir = str(r.folder.dir.parent)
        self.error("")
        self.app.recipe = recipe
        self.app.push_screen(RunScreen(recipe))

    def action_delete(self) -> None:
        r = self.selected()
        if r is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                r.folder.delete()
            except (EdgetuneError, OSError) as e:
                self.error(str(e))
                return
            self.error(f"deleted {r.folder.dir}")
            self.action_refresh()
        self.app.push_screen(ConfirmScreen(f"Delete run {r.name} and every file in {r.folder.dir}/ "
                                           "(adapter, GGUF files, logs)? This cannot be undone."), answered)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        action = getattr(self, f"action_{event.button.id}", None)
        if action:
            action()
