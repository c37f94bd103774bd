"""Wizard step 2: the dataset: path or file picker, detected format, a preview rendered with the
template, token lengths, and bad rows named by file and line."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from edgetune import DataSpec, EdgetuneError, check_id, demo_base_ready, is_hub_id, templates
from edgetune import data as data_mod

from ..display import base_label
from ..messages import TRANSFORMERS_LOCK, JobFinished, finished
from ..widgets.histogram import Histogram
from ..widgets.toggles import Checkbox
from .file_picker import FilePickerScreen
from .wizard import WizardScreen

FORMATS = [("auto-detect", "auto"), ("alpaca", "alpaca"), ("chat", "chat"), ("text", "text")]
TEMPLATES = [("template: auto", "auto")] + [(f"template: {t}", t) for t in templates.CHOICES[1:]]
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
PREVIEW_ROWS = 5
PREVIEW_COLUMNS = (("row", 16), ("prompt", 36), ("response", 18))  # label, width in cells
MAPPED = ("instruction", "input", "output")  # the alpaca fields the file's own columns can be mapped to


class DatasetScreen(WizardScreen):
    page_title = "Dataset"

    def __init__(self):
        super().__init__()
        self.examples: list = []
        self.checked: tuple | None = None  # the values last checked: a change event repeating them is ignored

    def body(self) -> ComposeResult:
        d = self.app.recipe.data
        yield Label("Dataset", classes="title")
        yield Static("JSONL/JSON/CSV/Parquet with alpaca, chat or text rows; 'demo' is built in.",
                     classes="hint")
        with Horizontal(classes="row"):
            yield Input(value=d.path, id="path", placeholder="path/to/data.jsonl or demo")
            yield Button("Browse", id="browse")
            yield Select(FORMATS, value=d.format, allow_blank=False, id="format")
            yield Button("Check", id="check")
        with Horizontal(classes="row"):
            yield Select(_template_options(d.template), value=d.template, allow_blank=False, id="template")
            yield Static("", id="template-why", classes="hint")
        with Horizontal(classes="field", id="columns"):  # shown when the file's columns need mapping
            for key in MAPPED:
                yield Select([], prompt=f"{key}: –", id=f"col-{key}", compact=True, classes="column-select")
        yield Checkbox("Skip bad rows (count them) instead of stopping", value=d.on_bad_row == "skip", id="skip")
        yield Static("", id="summary", classes="hint")
        yield Static("", id="skipped", classes="error")
        yield DataTable(id="preview", zebra_stripes=True, cursor_type="row")
        yield Static("", id="rendered")
        yield Histogram(id="histogram")

    def on_mount(self) -> None:
        table = self.query_one("#preview", DataTable)
        for label, width in PREVIEW_COLUMNS:  # fixed widths: the table keeps its shape at 80 columns as rows arrive
            table.add_column(label, width=width)
        columns = self.app.recipe.data.columns
        self.query_one("#columns").display = bool(columns)
        if columns:
            self._offer_columns(list(dict.fromkeys(v for k, v in columns.items() if k in MAPPED)), columns)
        if self.app.recipe.base == "demo" and not _demo_base_ready():  # minutes of work: only when asked
            self.query_one("#summary", Static).update("Check loads the demo tokenizer (the demo base is built "
                                                      "once, a few minutes)")
        else:
            self.check()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "check":
            self.check(force=True)
        elif event.button.id == "browse":
            self.browse()
        else:
            super().on_button_pressed(event)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.check(force=True)

    def on_select_changed(self, event: Select.Changed) -> None:
        if (event.select.id in ("format", "template") or event.select.id.startswith("col-")) and self.checked is not None:
            self.check()

    def _offer_columns(self, columns: list[str], mapping: dict[str, str]) -> None:
        """The mapping row: each alpaca field with the file's own columns to choose from."""
        self.query_one("#columns").display = True
        for key in MAPPED:
            select = self.query_one(f"#col-{key}", Select)
            select.set_options([(f"{key}: {c}", c) for c in columns])
            select.value = mapping.get(key, Select.NULL) if mapping.get(key) in columns else Select.NULL

    def _columns(self) -> dict[str, str]:
        """data.columns as the mapping row sets it ({} while it is hidden)."""
        if not self.query_one("#columns").display:
            return {}
        values = {key: self.query_one(f"#col-{key}", Select).value for key in MAPPED}
        return {k: str(v) for k, v in values.items() if v not in (Select.NULL, None, "")}

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if self.checked is not None:
            self.check()

    def browse(self) -> None:

        def picked(path: str | None) -> None:
            if path:
                self.query_one("#path", Input).value = path
                self.check()
        self.app.push_screen(FilePickerScreen("Choose a dataset file", self._values()[0], DATA_SUFFIXES), picked)

    def _values(self) -> tuple[str, str, str, str, tuple]:
        path = self.query_one("#path", Input).value.strip()
        fmt = self.query_one("#format", Select).value
        skip = "skip" if self.query_one("#skip", Checkbox).value else "error"
        return path, str(fmt), skip, str(self.query_one("#template", Select).value), tuple(self._columns().items())

    def check(self, force: bool = False) -> None:
        if self.checked is not None and self.checked[0] != self.query_one("#path", Input).value.strip():
            self.query_one("#columns").display = False  # another file: its own columns, if it needs them
        values = (*self._values(), self.app.recipe.base)
        if values == self.checked and not force:
            return
        self.checked = values
        self.show_error("")
        self.query_one("#skipped", Static).update("")
        base = self.app.recipe.base
        slow = " (the demo base is built once, a few minutes)" if base == "demo" and not _demo_base_ready() else ""
        self.query_one("#summary", Static).update(f"checking with the {base_label(base)} tokenizer…{slow}")
        self.inspect(*values)

    @work(thread=True, exclusive=True, group="inspect")
    def inspect(self, path: str, fmt: str, on_bad_row: str, template: str, columns: tuple, base: str) -> None:
        spec = DataSpec(path=path, format=fmt, on_bad_row=on_bad_row, template=template,
                        max_length=self.app.recipe.data.max_length, columns=dict(columns))
        with TRANSFORMERS_LOCK:
            result = finished(_inspect, spec, base)
        if result.error is not None:  # the file's own columns, to offer a mapping
            result.result = _file_columns(path)
        self.post_message(result)

    def on_job_finished(self, message: JobFinished) -> None:
        if message.error is not None:
            self._failed(message.error)
            columns = message.result or []
            suggested = data_mod.suggest_columns(columns)
            if columns and not self._columns() and (suggested or "cannot tell the format" in message.error):
                self._offer_columns(columns, suggested)  # changing the row checks again
                self.show_error(f"{message.error}\nmap the file's columns to instruction / input / output below")
        else:
            self._show(message.result)

    def _failed(self, message: str) -> None:
        self.query_one("#summary", Static).update("")
        self.query_one("#preview", DataTable).clear()
        self.query_one("#rendered", Static).update("")
        self.query_one("#histogram", Histogram).update("")
        self.query_one("#template-why", Static).update("")
        self.show_error(message)

    def _show(self, prepared) -> None:
        ds, stats = prepared.dataset, prepared.stats
        self.examples = prepared.examples[:PREVIEW_ROWS]
        self.app.data_stats = stats
        d = self.app.recipe.data
        if d.max_length in (DataSpec().max_length, self.app.proposed_max_length):  # not chosen by the user
            d.max_length = self.app.proposed_max_length = stats.suggested_max_length()
            proposal = f"max length {d.max_length} proposed from the data (p99 {stats.p99}, rounded up)"
        else:
            proposal = f"max length {d.max_length} as set; the data suggests {stats.suggested_max_length()} (p99 {stats.p99})"
        self.query_one("#summary", Static).update(
            f"format {ds.format}: {len(ds.rows)} rows, {len(ds.skipped)} skipped\n{stats.summary()}\n{proposal}")
        self.query_one("#template-why", Static).update(
            f"{prepared.template.name}: {prepared.template.reason}" if prepared.template else "plain text: no template")
        skipped = self.query_one("#skipped", Static)
        skipped.display = bool(ds.skipped)
        skipped.update(
            "\n".join(f"skipped {_short_where(s)}" for s in ds.skipped[:5])
            + (f"\n… and {len(ds.skipped) - 5} more" if len(ds.skipped) > 5 else ""))
        table = self.query_one("#preview", DataTable)
        table.clear()
        for i, ex in enumerate(self.examples):
            cells = (_short_where(ex.where), _prompt_body(ex), ex.answer or ex.completion)
            table.add_row(*(_flat(c, w) for c, (_, w) in zip(cells, PREVIEW_COLUMNS)), key=str(i))
        self._render_example(0)
        self.query_one("#histogram", Histogram).show(stats.histogram, "tokens per row")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._render_example(int(event.row_key.value))

    def _render_example(self, i: int) -> None:
        if i < len(self.examples):
            from rich.text import Text
            ex = self.examples[i]
            text = Text(ex.prompt, style="dim")
            text.append(ex.completion, style="bold")
            self.query_one("#rendered", Static).update(text)

    def apply(self) -> Callable[[], None] | None:
        path, fmt, skip, template, columns = self._values()
        if not path:
            raise EdgetuneError("dataset: type a file path (or demo)")

        def use() -> None:
            d = self.app.recipe.data
            d.path, d.format, d.on_bad_row, d.template, d.columns = path, fmt, skip, template, dict(columns)
        if path != "demo" and not Path(path).expanduser().exists():
            if not is_hub_id(path):
                raise EdgetuneError(f"{path}: no such file")

            def check_then_use() -> None:  # cached -> used; else the CLI's one line
                check_id(path, "dataset")
                use()
            return check_then_use
        use()
        return None



def _inspect(spec: DataSpec, base: str):
    return data_mod.inspect(spec, base)


def _file_columns(path: str) -> list[str] | None:
    """A local file's column names, or None (unreadable, or not a local file)."""
    source = data_mod.dataset_source(path)
    if not Path(source).expanduser().is_file():
        return None
    try:
        return data_mod.file_columns(data_mod.read_rows(Path(source).expanduser()))
    except EdgetuneError:
        return None


def _template_options(current: str) -> list[tuple[str, str]]:
    """The named templates, and a .jinja file the recipe names."""
    return TEMPLATES + ([(f"template: {Path(current).name}", current)] if current not in templates.CHOICES else [])


def _demo_base_ready() -> bool:
    return demo_base_ready()


def _short_where(where: str) -> str:
    """'/long/path/data.jsonl:12: why' -> 'data.jsonl:12: why' (the line number is what matters)."""
    return where.rsplit("/", 1)[-1]


def _prompt_body(example) -> str:
    """The part of a rendered prompt that differs between rows: the last user message."""
    users = [m["content"] for m in example.messages if m["role"] == "user"]
    return users[-1] if users else example.prompt


def _flat(text: str, width: int) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"
