"""The run: one row per pipeline step, live training numbers and loss chart, the log, Cancel; when
done, the smoke-test table with buttons to chat with any produced GGUF."""
from __future__ import annotations

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Button,
    Footer,
    Header,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)

from edgetune import (
    Cancelled,
    CancelToken,
    EdgetuneError,
    RunFolder,
    SmokeResult,
    TrainMetrics,
    progress_line,
)

from ..display import base_label, one_line, shown_path
from ..messages import CoreEvent, JobFinished
from ..widgets.loss_chart import LossChart
from ..widgets.results_view import ResultsView
from ..widgets.smoke_table import SmokeTable
from ..widgets.step_table import StepTable
from .confirm import ConfirmScreen

STEP_STATES = {"step_start": "running", "step_done": "done", "step_skip": "skipped", "step_fail": "failed"}


class RunScreen(Screen):
    # Cancel while it runs; once it has finished, Escape goes back (to the wizard's Summary) instead.
    BINDINGS = [Binding("ctrl+c,escape", "cancel", "Cancel run"), Binding("escape", "back", "Back"),
                Binding("ctrl+t", "chat", "Chat")]

    def __init__(self, recipe):
        super().__init__()
        self.recipe = recipe
        self.cancel_token = CancelToken()
        self.finished = False

    def compose(self) -> ComposeResult:
        r = self.recipe
        yield Header()
        yield Static(f"run [b]{escape(r.name)}[/b]: {escape(f'{base_label(r.base)} on {base_label(r.data.path)}')}",
                     id="run-title")
        with TabbedContent(initial="progress"):
            with TabPane("Progress", id="progress"):
                with Horizontal():
                    yield StepTable(id="steps")
                    with Vertical(id="live"):
                        yield Static("waiting for the first step…", id="metrics")
                        yield LossChart(id="chart")
            with TabPane("Log", id="log"):
                yield RichLog(id="log-view", wrap=True, markup=False)
            with TabPane("Results", id="results"):
                yield ResultsView("results appear when the smoke test has run")
        yield Static("", id="error", classes="error")
        with Horizontal(classes="nav"):
            yield Static("", id="status", classes="hint")
            yield Button("Cancel", id="cancel", variant="error")
            yield Button("Run again", id="again", variant="primary")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#again", Button).display = False
        self.set_interval(1.0, self.query_one(StepTable).tick)
        self.start()

    def start(self) -> None:
        """(Re)start the pipeline; a rerun resumes: finished steps are skipped, training continues."""
        self.cancel_token = CancelToken()
        self.app.running_tokens.add(self.cancel_token)
        self.finished = False
        self.query_one(StepTable).reset()
        self.query_one("#chart", LossChart).clear()
        self.query_one("#error", Static).update("")
        self.query_one("#status", Static).update("")
        self.query_one("#again", Button).display = False
        cancel = self.query_one("#cancel", Button)
        cancel.display, cancel.disabled = True, False
        self.query_one(TabbedContent).active = "progress"
        self.refresh_bindings()
        self.run_pipeline()

    @work(thread=True, exclusive=True, group="pipeline")
    def run_pipeline(self) -> None:
        post = lambda e: self.post_message(CoreEvent(e))  # noqa: E731
        try:
            summary = self.app.runner(self.recipe, post, self.cancel_token)
            self.post_message(JobFinished(summary))
        except Cancelled as e:
            hint = "" if "resume" in str(e) else "; finished steps are kept, run again to resume"
            self.post_message(JobFinished(None, f"stopped: {e}{hint}"))
        except EdgetuneError as e:  # a failed smoke test still has its table
            self.post_message(JobFinished(self._smoke_summary(), str(e)))
        except Exception as e:  # a bug: still one line here
            self.post_message(JobFinished(None, one_line(e)))

    def _smoke_summary(self) -> SmokeResult | None:
        folder = self._run()
        return folder.optional(folder.smoke_result)

    def on_core_event(self, message: CoreEvent) -> None:
        e = message.event
        if e.kind in STEP_STATES:
            state = "stopped" if e.data.get("cancelled") else STEP_STATES[e.kind]
            self.query_one(StepTable).set_state(e.phase, state)
        if isinstance(e, TrainMetrics) and e.phase == "train" and (e.loss is not None or e.eval_loss is not None):
            self.query_one("#chart", LossChart).add(e.step or 0, e.loss, e.eval_loss)
        if e.kind == "progress":
            self.query_one("#metrics", Static).update(progress_line(e))
            if isinstance(e, TrainMetrics) and e.eval_loss is not None:
                self.query_one("#log-view", RichLog).write(f"[train] step {e.step}: eval loss {e.eval_loss:.4f}")
        elif e.message:
            self.query_one("#log-view", RichLog).write(f"[{e.phase}] {e.message}")

    def on_job_finished(self, message: JobFinished) -> None:
        self.done(message.result, message.error)

    def done(self, summary: SmokeResult | None, error: str | None) -> None:
        self.app.running_tokens.discard(self.cancel_token)
        self.finished = True
        self.refresh_bindings()  # the footer stops offering Cancel
        self.query_one("#cancel", Button).display = False
        self.query_one("#again", Button).display = bool(error)
        if error:
            self.query_one("#status", Static).update("")
            self.query_one("#error", Static).update(error)
            self.query_one(StepTable).stop_running("stopped" if error.startswith("stopped") else "failed")
        else:
            self.query_one("#status", Static).update(f"done; files in {shown_path(self._run().gguf_dir)}/")
        if summary:
            self.query_one(ResultsView).show(self._run(), summary)
            self.query_one(TabbedContent).active = "results"
            self.query_one(SmokeTable).focus()

    def _run(self) -> RunFolder:
        return RunFolder.of(self.recipe)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return not self.finished
        if action == "back":
            return self.finished and len(self.app.screen_stack) > 2
        return True

    def action_back(self) -> None:
        if self.finished and len(self.app.screen_stack) > 2:  # came from the wizard: back to its summary
            self.app.pop_screen()

    def action_cancel(self) -> None:
        if self.finished:
            self.action_back()
            return
        if self.cancel_token.cancelled:
            return

        def answered(yes: bool | None) -> None:
            if yes and not self.finished:
                self.cancel_token.cancel()
                self.query_one("#status", Static).update("stopping at a safe point…")
                self.query_one("#cancel", Button).disabled = True
        self.app.push_screen(ConfirmScreen("Cancel the run? Finished steps are kept; training stops at its next "
                                           "log step and saves a checkpoint."), answered)

    def action_chat(self) -> None:
        self.query_one(ResultsView).chat()

    def on_results_view_note(self, message: ResultsView.Note) -> None:
        self.query_one("#status", Static).update(message.text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.action_cancel()
        elif event.button.id == "again":
            self.start()
