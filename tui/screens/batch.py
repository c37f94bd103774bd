"""Batch: every PEFT adapter under a folder -> GGUF files, a row per adapter, errors per row."""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Select,
    Static,
)

from edgetune import CancelToken, EdgetuneError, adapter_problem, find_adapters, run_batch, slug
from edgetune.convert.filetypes import FILE_TYPES

from ..display import one_line, show_status, shown_path
from ..messages import CoreEvent, JobFinished
from ..widgets.toggles import SelectionList
from .file_picker import FilePickerScreen

MODES = [("merged model", "merged"), ("GGUF LoRA adapter", "lora"), ("both", "both")]
QUANTS = tuple(name for name, t in FILE_TYPES.items() if t.offered)  # the registry's short list


class BatchScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self):
        super().__init__()
        self.cancel_token = CancelToken()
        self.adapters: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Input(id="folder", placeholder="folder of PEFT adapters")
            yield Button("Browse", id="browse")
            yield Button("Scan", id="scan")
        with Horizontal(id="batch-options"):
            yield SelectionList(*[(q, q, q == "Q4_K_M") for q in QUANTS], id="quants")
            with Horizontal(classes="row"):
                yield Select(MODES, value="merged", allow_blank=False, id="mode")
                yield Input("gguf-out", id="out", placeholder="output folder")
        yield DataTable(id="rows", zebra_stripes=True, show_cursor=False)
        yield Static("choose a folder: every folder under it holding adapter files is one row",
                     id="error", classes="status")
        with Horizontal(classes="nav"):
            yield Button("Convert all", id="run", variant="primary")
            yield Button("Cancel", id="cancel", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#rows", DataTable)
        for column in ("adapter", "status", "files / error"):
            table.add_column(column, key=column)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "scan":
            self.scan()
        elif event.button.id == "browse":
            self.browse()
        elif event.button.id == "run":
            self.start()
        elif event.button.id == "cancel":
            self.cancel_token.cancel()
            self.status("stopping after the adapter in progress…")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "folder":
            self.scan()

    def status(self, message: str, error: bool = False) -> None:
        show_status(self, message, error)

    def browse(self) -> None:

        def picked(path: str | None) -> None:
            if path:
                self.query_one("#folder", Input).value = path
                self.scan()
        self.app.push_screen(FilePickerScreen("Choose the folder holding the adapters",
                                              self.query_one("#folder", Input).value.strip() or "."), picked)

    def scan(self) -> list[Path]:
        table = self.query_one("#rows", DataTable)
        table.clear()
        folder = self.query_one("#folder", Input).value.strip()
        self.adapters = []
        if not folder:
            self.status("type or browse to a folder of adapters", error=True)
            return []
        try:
            self.adapters = find_adapters(folder)
        except EdgetuneError as e:
            self.status(str(e), error=True)
            return []
        if not self.adapters:
            self.status(f"{folder}: no PEFT adapters found (folders with adapter_config.json and weights)", error=True)
            return []
        broken = 0
        for a in self.adapters:
            name = adapter_name(a, Path(folder))
            problem = adapter_problem(a)
            broken += problem is not None
            table.add_row(name, "broken" if problem else "pending", problem.split(": ", 1)[-1] if problem
                          else shown_path(a), key=name)
        self.status(f"{len(self.adapters)} adapters found" + (f", {broken} of them broken (see why)" if broken else ""))
        return self.adapters

    def start(self) -> None:
        if not self.scan():
            return
        quants = list(self.query_one("#quants", SelectionList).selected)
        if not quants:
            self.status("tick at least one quant type (space ticks)", error=True)
            return
        self.cancel_token = CancelToken()
        self.app.running_tokens.add(self.cancel_token)
        self.query_one("#run", Button).disabled = True
        self.query_one("#cancel", Button).disabled = False
        self.status("converting…")
        out = self.query_one("#out", Input).value.strip() or "gguf-out"
        self._run(self.query_one("#folder", Input).value.strip(), out, quants,
                  str(self.query_one("#mode", Select).value))

    @work(thread=True, exclusive=True, group="batch")
    def _run(self, folder: str, out: str, quants: list[str], mode: str) -> None:
        post = lambda e: self.post_message(CoreEvent(e))  # noqa: E731
        try:
            rows = run_batch(folder, out, quants, mode, post, self.cancel_token)
            good = sum(r["status"] in ("ok", "skipped") for r in rows)
            message, failed = f"{good}/{len(rows)} adapters converted into {out}/ (batch.md lists them)", good < len(rows)
        except EdgetuneError as e:
            message, failed = str(e), True
        except Exception as e:
            message, failed = one_line(e), True
        self.post_message(JobFinished(message, message if failed else None))

    def on_core_event(self, message: CoreEvent) -> None:
        e = message.event
        if e.phase == "batch" and e.kind == "progress" and "name" in e.data:
            self.show_row(e.data)
        elif e.phase == "batch" and e.kind == "done":
            for row in e.data.get("rows", []):
                self.show_row(row)

    def show_row(self, row: dict) -> None:
        detail = row.get("error") or ", ".join(Path(f).name for f in row.get("files", [])) or row.get("base", "")
        table = self.query_one("#rows", DataTable)
        if row["name"] in table.rows:
            table.update_cell(row["name"], "status", row["status"])
            table.update_cell(row["name"], "files / error", detail)
        else:  # a row the scan did not list (the folder changed meanwhile)
            table.add_row(row["name"], row["status"], detail, key=row["name"])

    def on_job_finished(self, message: JobFinished) -> None:
        self.app.running_tokens.discard(self.cancel_token)
        self.status(message.result, error=message.error is not None)
        self.query_one("#run", Button).disabled = False
        self.query_one("#cancel", Button).disabled = True

    def action_back(self) -> None:
        if self.app.running and self.cancel_token in self.app.running_tokens:
            self.status("a batch is running: Cancel it first", error=True)
            return
        self.app.pop_screen()


def adapter_name(adapter: Path, root: Path) -> str:
    """The row key: the engine's slug (its events name rows by it)."""
    return slug(adapter, root)
