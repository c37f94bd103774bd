"""Wizard step 3: training settings, with a line of help each; bad values are named inline as typed."""
from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from edgetune import EdgetuneError, estimate, plan, threads, tracker_problem
from edgetune import recipe as recipe_mod

from ..messages import TRANSFORMERS_LOCK, JobFinished, finished
from .wizard import WizardScreen

METHODS = [("auto", "auto"), ("QLoRA (4-bit base)", "qlora"), ("LoRA (16/32-bit)", "lora")]
METHOD_NAMES = {"qlora": "QLoRA", "lora": "LoRA"}
TARGETS = [("q,v", "qv"), ("q,k,v,o", "attn"), ("all linear", "all-linear")]
TRACKERS = [("none", "none"), ("TensorBoard", "tensorboard"), ("Weights & Biases", "wandb")]
TRACKER_HELP = "experiment tracker the trainer logs to"
FIELDS = [  # (section, attribute, label, help)
    ("train", "rank", "rank r", "update capacity; 8-64, 16 is the usual start"),
    ("train", "alpha", "alpha", "update scale; often 2 x rank"),
    ("train", "epochs", "epochs", "passes over the data; 1-5, fewer is often better"),
    ("train", "lr", "learning rate", "LoRA wants 1e-5..3e-4 (tiny models more)"),
    ("train", "batch_size", "batch size", "rows per step; smaller gives more steps"),
    ("train", "grad_accum", "grad accum", "steps summed into one update"),
    ("data", "max_length", "max length", "tokens per row; longer rows are cut"),
    ("train", "seed", "seed", "same seed, same data split and run"),
]
NUMBER_TYPES = {"rank": int, "alpha": int, "max_length": int, "seed": int, "epochs": float, "lr": float,
                "batch_size": int, "grad_accum": int}
# the recipe's field names in the core's advice, as this screen labels them
SHOWN_NAMES = {"train.batch_size": "batch size", "train.grad_accum": "grad accum", "train.epochs": "epochs",
               "train.max_steps": "max steps"}


class LoadChecked(Message):
    """How busy the CPUs are, for the line that warns of a slow run."""

    def __init__(self, choice: threads.Choice) -> None:
        super().__init__()
        self.choice = choice


class TrainingScreen(WizardScreen):
    page_title = "Training"

    def body(self) -> ComposeResult:
        r = self.app.recipe
        p = plan(recipe_mod.TrainSpec())
        yield Label("Training", classes="title")
        method = METHOD_NAMES.get(p.method, p.method)
        yield Static(f"Detected {p.device.upper()}: auto means {method}.", id="plan", classes="hint")
        yield Static("expected tokens/s: measuring this machine…", id="estimate", classes="hint")
        yield Static("", id="busy", classes="hint")  # shown when other processes keep CPUs busy
        with Horizontal(classes="field"):
            yield Label("method", classes="field-label")
            yield Select(METHODS, value=r.train.method, allow_blank=False, id="method", classes="field-select", compact=True)
            yield Static("QLoRA needs CUDA; LoRA runs anywhere", classes="field-help")
        with Horizontal(classes="field"):
            yield Label("targets", classes="field-label")
            yield Select(TARGETS, value=r.train.targets if r.train.targets in recipe_mod.TARGET_PRESETS
                         else "all-linear", allow_blank=False, id="targets", classes="field-select", compact=True)
            yield Static("layers that get adapters; all is best", classes="field-help")
        for section, attr, label, help_text in FIELDS:
            with Horizontal(classes="field"):
                yield Label(label, classes="field-label")
                yield Input(value=_shown(getattr(getattr(r, section), attr)), id=f"f-{attr}", classes="field-input",
                            compact=True)
                yield Static(help_text, classes="field-help")
        yield Static(self._cut_line(r.data.max_length), id="cut", classes="hint")
        yield Static(self._steps_line(r), id="steps-plan", classes="hint")
        with Horizontal(classes="field"):
            yield Label("report to", classes="field-label")
            yield Select(TRACKERS, value=r.train.report_to, allow_blank=False, id="report_to", classes="field-select",
                         compact=True)
            yield Static(_tracker_help(r.train.report_to), id="report-help", classes="field-help")
        with Horizontal(classes="field"):
            yield Button("Defaults", id="defaults", compact=True, classes="field-label")
            yield Static("r 16, alpha 32, 3 epochs, lr 2e-4, batch 4 x 4: a usual LoRA start", classes="field-help")

    def on_mount(self) -> None:
        self.query_one("#busy", Static).display = False
        self.check_load(self.app.recipe.threads)
        self.measure(self.app.recipe, self.app.data_stats)

    @work(thread=True, exclusive=True, group="load")
    def check_load(self, override: int) -> None:
        """The threads a run started here would take, and why (a short /proc/stat sample): off the UI thread."""
        self.post_message(LoadChecked(threads.choose(override, f"threads: {override}", ui=True)))

    def on_load_checked(self, message: LoadChecked) -> None:
        line = self.query_one("#busy", Static)
        line.update(f"[yellow]{message.choice.reason}[/yellow]")
        line.display = bool(message.choice.busy)

    @work(thread=True, exclusive=True, group="estimate")
    def measure(self, recipe: recipe_mod.Recipe, stats) -> None:
        """The core's throughput estimate (a short matmul measurement): off the UI thread."""
        with TRANSFORMERS_LOCK, threads.for_ui():  # measured on the threads a run from here takes
            self.post_message(finished(estimate, recipe, stats))

    def on_job_finished(self, message: JobFinished) -> None:
        if message.error is not None:
            self.query_one("#estimate", Static).update(f"expected tokens/s: unknown ({message.error})")
            return
        est = message.result  # the dtype depends on the base model's width: known once its config is read
        method = METHOD_NAMES.get(plan(recipe_mod.TrainSpec()).method, "")
        self.query_one("#plan", Static).update(f"Detected {est.device.upper()}: auto means {method} in {est.dtype} "
                                               f"({est.why}).")
        self.query_one("#estimate", Static).update(est.line())

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "report_to":
            self.query_one("#report-help", Static).update(_tracker_help(str(event.value)))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "f-max_length":
            try:
                self.query_one("#cut", Static).update(self._cut_line(int(event.value)))
            except ValueError:
                pass
        try:
            recipe = self.settings()
            self.show_error("")
        except EdgetuneError as e:
            self.show_error(str(e))
            return
        self.query_one("#steps-plan", Static).update(self._steps_line(recipe))

    def _steps_line(self, recipe: recipe_mod.Recipe) -> str:
        """How many optimizer steps this plan gives the dataset's rows; in red, with a batch size or
        epochs that would do, when they are too few to learn (the dataset step counted the rows)."""
        stats = self.app.data_stats
        if stats is None:
            return "optimizer steps: check the dataset to count them"
        rows = recipe_mod.train_rows(stats.count, recipe.data.eval_split)
        advice = recipe_mod.steps_advice(recipe.train, rows)
        if advice is None:
            return f"{recipe_mod.optimizer_steps(recipe.train, rows)} optimizer steps for {rows} training rows"
        for name, shown in SHOWN_NAMES.items():
            advice = advice.replace(name, shown)
        return f"[red]too few steps: {advice}[/red]"

    def _cut_line(self, max_length: int) -> str:
        """How many responses this max length cuts, in red when any (from the dataset step's check)."""
        stats = self.app.data_stats
        if stats is None:
            return "max length: check the dataset to see how many responses it cuts"
        cut, lost = stats.cut_at(max_length)
        line = (f"at {max_length}: {cut} of {stats.count} responses cut, {lost} lost whole "
                f"(data p99 {stats.p99}, suggested {stats.suggested_max_length()})")
        return f"[red]{line}[/red]" if cut else line

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "defaults":
            t, d = recipe_mod.TrainSpec(), recipe_mod.DataSpec()
            for section, attr, *_ in FIELDS:
                self.query_one(f"#f-{attr}", Input).value = _shown(getattr(t if section == "train" else d, attr))
            self.query_one("#method", Select).value = t.method
            self.query_one("#targets", Select).value = t.targets
            self.query_one("#report_to", Select).value = t.report_to
        else:
            super().on_button_pressed(event)

    def settings(self) -> recipe_mod.Recipe:
        """The recipe with this screen's values, validated (EdgetuneError names the bad field)."""
        values = self.app.recipe.to_dict()
        values["train"]["method"] = self.query_one("#method", Select).value
        values["train"]["targets"] = self.query_one("#targets", Select).value
        values["train"]["report_to"] = self.query_one("#report_to", Select).value
        problem = tracker_problem(values["train"]["report_to"])
        if problem:
            raise EdgetuneError(f"settings: train.report_to {problem}")
        for section, attr, *_ in FIELDS:
            text = self.query_one(f"#f-{attr}", Input).value.strip()
            values[section][attr] = _number(text, NUMBER_TYPES[attr], f"{section}.{attr}")
        return recipe_mod.from_dict(values, "settings")

    def apply(self) -> None:
        self.app.recipe = self.settings()



def _tracker_help(name: str) -> Text | str:
    """What the tracker choice does, or (red) the package it needs: short enough for an 80-column field."""
    if tracker_problem(name):
        return Text(f"needs: pip install 'edgetune[{name}]'", style="red")
    return TRACKER_HELP


def _number(text: str, kind: type, name: str):
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise EdgetuneError(f"settings: {name} {text!r} must be {what}") from None


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
