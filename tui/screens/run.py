"""The run: one row per pipeline step, live training numbers and loss chart, the log, Cancel; when
done, the smoke-test table with buttons to chat with any produced GGUF."""
from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, RichLog, Static, TabbedContent, TabPane

from edgetune.errors import EdgetuneError
from edgetune.events import Cancelled, CancelToken, Event

from ..widgets.loss_chart import LossChart
from ..widgets.smoke_table import SmokeTable

STEPS = ("train", "merge", "convert", "quantize", "smoke")


class RunScreen(Screen):
    BINDINGS = [Binding("ctrl+c,escape", "cancel", "Cancel run"), Binding("ctrl+t", "chat_selected", "Chat")]

    def __init__(self, recipe):
        super().__init__()
        self.recipe = recipe
        self.cancel_token = CancelToken()
        self.started: dict[str, float] = {}
        self.finished = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"run [b]{self.recipe.name}[/b]: {self.recipe.base} on {self.recipe.data.path}",
                     id="run-title")
        with TabbedContent(initial="progress"):
            with TabPane("Progress", id="progress"):
                with Horizontal():
                    yield DataTable(id="steps", show_cursor=False)
                    with Vertical(id="live"):
                        yield Static("", id="metrics")
                        yield LossChart(id="chart")
            with TabPane("Log", id="log"):
                yield RichLog(id="log-view", wrap=True, markup=False)
            with TabPane("Results", id="results"):
                yield Static("", id="accuracy")
                yield SmokeTable(id="smoke")
                with Horizontal(classes="nav"):
                    yield Button("Chat with selected", id="chat", disabled=True)
                    yield Button("Show folder", id="folder", disabled=True)
        yield Static("", id="error", classes="error")
        with Horizontal(classes="nav"):
            yield Button("Cancel", id="cancel", variant="error")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        for column in ("step", "state", "time"):
            table.add_column(column, key=column)
        for name in STEPS:
            table.add_row(name, "pending", "", key=name)
        self.app.running = True
        self.run_pipeline()

    @work(thread=True, exclusive=True, group="pipeline")
    def run_pipeline(self) -> None:
        post = lambda e: self.app.call_from_thread(self.handle_event, e)  # noqa: E731
        try:
            summary = self.app.runner(self.recipe, post, self.cancel_token)
            self.app.call_from_thread(self.done, summary, None)
        except Cancelled as e:
            self.app.call_from_thread(self.done, None, f"stopped: {e}; finished steps are kept, run again to resume")
        except EdgetuneError as e:
            self.app.call_from_thread(self.done, self._smoke_summary(), str(e))
        except Exception as e:  # a bug: still one line here; the log has the type
            self.app.call_from_thread(self.done, None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")

    def _smoke_summary(self):
        import json
        from edgetune.pipeline import Run
        path = Run(self.recipe).dir / "smoke.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _set_step(self, name: str, state: str) -> None:
        if name not in STEPS:
            return
        table = self.query_one("#steps", DataTable)
        elapsed = ""
        if state == "running":
            self.started[name] = time.time()
        elif name in self.started:
            elapsed = f"{time.time() - self.started[name]:.1f}s"
        table.update_cell(name, "state", state)
        table.update_cell(name, "time", elapsed)

    def handle_event(self, e: Event) -> None:
        log = self.query_one("#log-view", RichLog)
        if e.kind == "start" and e.message == e.phase:
            self._set_step(e.phase, "running")
        elif e.kind == "skip":
            self._set_step(e.phase, "skipped")
        elif e.kind == "done" and e.message.startswith(f"{e.phase}: "):
            self._set_step(e.phase, "done")
        if e.kind == "progress" and e.phase == "train":
            if e.loss is not None or e.eval_loss is not None:
                self.query_one("#chart", LossChart).add(e.step or 0, e.loss, e.eval_loss)
            parts = [f"step {e.step}/{e.total}"]
            for label, value, fmt in (("loss", e.loss, ".4f"), ("eval", e.eval_loss, ".4f"), ("lr", e.lr, ".2e"),
                                      ("tok/s", e.tokens_per_s, ".0f"), ("mem MiB", e.memory_mb, ".0f")):
                if value is not None:
                    parts.append(f"{label} {value:{fmt}}")
            if e.eta_s is not None:
                parts.append(f"ETA {int(e.eta_s) // 60}:{int(e.eta_s) % 60:02d}")
            self.query_one("#metrics", Static).update("  ".join(parts))
        elif e.kind == "progress" and e.step and e.total:
            self.query_one("#metrics", Static).update(f"{e.phase}: {e.step}/{e.total} {e.message}")
        if e.kind != "progress" and e.message:
            log.write(f"[{e.phase}] {e.message}")

    def done(self, summary: dict | None, error: str | None) -> None:
        self.app.running = False
        self.finished = True
        self.query_one("#cancel", Button).disabled = True
        if error:
            self.query_one("#error", Static).update(error)
            for name in STEPS:
                table = self.query_one("#steps", DataTable)
                if str(table.get_cell(name, "state")) == "running":
                    self._set_step(name, "stopped" if error.startswith("stopped") else "failed")
        if summary:
            self.query_one("#accuracy", Static).update(
                f"held-out accuracy: base {summary['base']['accuracy']:.0%} -> fine-tuned "
                f"{summary['hf']['accuracy']:.0%} (HF); HF perplexity {summary['hf']['perplexity']:.3f}")
            self.query_one("#smoke", SmokeTable).show(summary["files"])
            self.query_one("#chat", Button).disabled = False
            self.query_one("#folder", Button).disabled = False
            self.query_one(TabbedContent).active = "results"

    def action_cancel(self) -> None:
        if self.finished:
            self.app.pop_screen() if len(self.app.screen_stack) > 2 else None
            return
        from .confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel_token.cancel()
                self.query_one("#error", Static).update("stopping at a safe point…")
                self.query_one("#cancel", Button).disabled = True
        self.app.push_screen(ConfirmScreen("Cancel the run? Finished steps are kept; training stops after its "
                                           "current step and saves a checkpoint."), answered)

    def action_chat_selected(self) -> None:
        table = self.query_one("#smoke", SmokeTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.app.action_chat(key)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id == "chat":
            self.action_chat_selected()
        elif event.button.id == "folder":
            from edgetune.pipeline import Run
            self.query_one("#error", Static).update(f"output folder: {Run(self.recipe).gguf_dir.resolve()}")
