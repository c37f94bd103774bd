"""Batch: every PEFT adapter under a folder -> GGUF files, a row per adapter, errors per row."""
from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Select, Static

from edgetune.errors import EdgetuneError
from edgetune.events import CancelToken, Event

MODES = [("merged model per quant", "merged"), ("GGUF LoRA adapter", "lora"), ("both", "both")]


class BatchScreen(Screen):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self):
        super().__init__()
        self.cancel_token = CancelToken()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(classes="row"):
            yield Input(id="folder", placeholder="folder of PEFT adapters")
            yield Button("Scan", id="scan")
        with Horizontal(classes="row"):
            yield Input("Q4_K_M,Q8_0", id="quants", placeholder="Q4_K_M,Q8_0")
            yield Select(MODES, value="merged", allow_blank=False, id="mode")
            yield Input("gguf-out", id="out", placeholder="output folder")
        yield DataTable(id="rows", zebra_stripes=True)
        yield Static("", id="error", classes="error")
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
        elif event.button.id == "run":
            self.start()
        elif event.button.id == "cancel":
            self.cancel_token.cancel()
            self.error("stopping after the adapter in progress…")

    def error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def scan(self) -> list:
        from pathlib import Path

        from edgetune.batch import find_adapters, slug
        table = self.query_one("#rows", DataTable)
        table.clear()
        folder = self.query_one("#folder", Input).value.strip()
        try:
            adapters = find_adapters(folder) if folder else []
        except EdgetuneError as e:
            self.error(str(e))
            return []
        if not adapters:
            self.error(f"{folder or 'folder'}: no PEFT adapters found (folders with adapter_config.json)")
            return []
        for a in adapters:
            name = slug(a, Path(folder))
            table.add_row(name, "pending", str(a), key=name)
        self.error(f"{len(adapters)} adapters")
        return adapters

    def start(self) -> None:
        if not self.scan():
            return
        quants = [q.strip() for q in self.query_one("#quants", Input).value.split(",") if q.strip()]
        self.cancel_token = CancelToken()
        self.query_one("#run", Button).disabled = True
        self.query_one("#cancel", Button).disabled = False
        self.app.running = True
        self._run(self.query_one("#folder", Input).value.strip(), self.query_one("#out", Input).value.strip(),
                  quants, str(self.query_one("#mode", Select).value))

    @work(thread=True, exclusive=True, group="batch")
    def _run(self, folder: str, out: str, quants: list[str], mode: str) -> None:
        from edgetune.batch import run_batch
        post = lambda e: self.app.call_from_thread(self.handle_event, e)  # noqa: E731
        try:
            rows = run_batch(folder, out or "gguf-out", quants, mode, post, self.cancel_token)
            message = f"{sum(r['status'] in ('ok', 'skipped') for r in rows)}/{len(rows)} converted into {out}"
        except EdgetuneError as e:
            message = str(e)
        except Exception as e:
            message = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        self.app.call_from_thread(self._finished, message)

    def handle_event(self, e: Event) -> None:
        if e.phase == "batch" and e.kind == "progress" and "name" in e.data:
            row = e.data
            detail = row["error"] or ", ".join(f.rsplit("/", 1)[-1] for f in row["files"]) or row.get("base", "")
            table = self.query_one("#rows", DataTable)
            try:
                table.update_cell(row["name"], "status", row["status"])
                table.update_cell(row["name"], "files / error", detail)
            except Exception:  # a row the scan did not list (the folder changed meanwhile)
                table.add_row(row["name"], row["status"], detail, key=row["name"])
        elif e.phase == "batch" and e.kind == "done":
            for row in e.data.get("rows", []):
                self.handle_event(Event("batch", "progress", data=row))

    def _finished(self, message: str) -> None:
        self.app.running = False
        self.error(message)
        self.query_one("#run", Button).disabled = False
        self.query_one("#cancel", Button).disabled = True

    def action_back(self) -> None:
        self.app.pop_screen()
