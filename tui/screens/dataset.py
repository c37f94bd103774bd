"""Wizard step 2: the dataset: path, detected format, a preview rendered with the template,
token lengths, and bad rows named by file and line."""
from __future__ import annotations

import threading

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Select, Static

from edgetune.errors import EdgetuneError

from ..widgets.histogram import Histogram
from .wizard import WizardScreen

# transformers resolves its lazy imports unsafely when two threads import at once: one check at a time.
_INSPECT_LOCK = threading.Lock()
FORMATS = [("auto-detect", "auto"), ("alpaca", "alpaca"), ("chat (messages)", "chat"), ("text", "text")]


class DatasetScreen(WizardScreen):
    step = 1

    def body(self) -> ComposeResult:
        d = self.app.recipe.data
        yield Label("Dataset", classes="title")
        yield Static("JSONL, JSON, CSV or Parquet; alpaca, chat or text rows. 'demo' is the built-in one.",
                     classes="hint")
        with Horizontal(classes="row"):
            yield Input(value=d.path, id="path", placeholder="path/to/data.jsonl or demo")
            yield Select(FORMATS, value=d.format, allow_blank=False, id="format")
            yield Button("Check", id="check")
        yield Checkbox("Skip bad rows (count them) instead of stopping", value=d.on_bad_row == "skip", id="skip")
        yield Static("", id="summary", classes="hint")
        yield DataTable(id="preview", zebra_stripes=True)
        yield Histogram(id="histogram")

    def on_mount(self) -> None:
        table = self.query_one("#preview", DataTable)
        table.add_columns("row", "prompt", "response")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "check":
            self.check()
        else:
            super().on_button_pressed(event)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.check()

    def _values(self) -> tuple[str, str, str]:
        path = self.query_one("#path", Input).value.strip()
        fmt = self.query_one("#format", Select).value
        skip = "skip" if self.query_one("#skip", Checkbox).value else "error"
        return path, str(fmt), skip

    def check(self) -> None:
        self.show_error("")
        self.query_one("#summary", Static).update("checking…")
        self.inspect(*self._values())

    @work(thread=True, exclusive=True, group="inspect")
    def inspect(self, path: str, fmt: str, on_bad_row: str) -> None:
        with _INSPECT_LOCK:
            self._inspect(path, fmt, on_bad_row)

    def _inspect(self, path: str, fmt: str, on_bad_row: str) -> None:
        from edgetune import data as data_mod
        from edgetune.base import resolve_base
        from edgetune.train import _dataset_source, load_tokenizer
        try:
            ds = data_mod.load_dataset(_dataset_source(path or "demo"), fmt, on_bad_row)
            tok = load_tokenizer(resolve_base(self.app.recipe.base))
            examples = data_mod.render(ds, tok)
            max_len = self.app.recipe.data.max_length
            stats = data_mod.token_stats(data_mod.tokenize(examples, tok, max_len), max_len)
        except EdgetuneError as e:
            self.app.call_from_thread(self._failed, str(e))
            return
        except Exception as e:  # a bug, but the UI must not die: show it on one line
            self.app.call_from_thread(self._failed, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            return
        self.app.call_from_thread(self._show, ds, examples[:5], stats)

    def _failed(self, message: str) -> None:
        self.query_one("#summary", Static).update("")
        self.show_error(message)

    def _show(self, ds, examples, stats) -> None:
        skipped = f", {len(ds.skipped)} bad rows skipped (first: {ds.skipped[0]})" if ds.skipped else ""
        self.query_one("#summary", Static).update(f"{ds.format}: {len(ds.rows)} rows{skipped}\n{stats.summary()}")
        table = self.query_one("#preview", DataTable)
        table.clear()
        flat = lambda s, n: s.replace("\n", "⏎")[:n]  # noqa: E731
        for ex in examples:
            table.add_row(ex.where.rsplit("/", 1)[-1], flat(ex.prompt, 44), flat(ex.completion, 24))
        self.query_one("#histogram", Histogram).show(stats.histogram, "tokens per row")

    def apply(self) -> None:
        path, fmt, skip = self._values()
        if not path:
            raise EdgetuneError("dataset: type a file path (or demo)")
        from pathlib import Path
        if path != "demo" and not Path(path).expanduser().exists() and "/" not in path:
            raise EdgetuneError(f"{path}: no such file")
        d = self.app.recipe.data
        d.path, d.format, d.on_bad_row = path, fmt, skip

    def next_screen(self):
        from .training import TrainingScreen
        return TrainingScreen()
