"""Wizard step 3: training settings, with the seed guide's defaults and a line of help each."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Select, Static

from edgetune import recipe as recipe_mod
from edgetune.errors import EdgetuneError

from .wizard import WizardScreen

FIELDS = [  # (recipe attribute, label, help)
    ("rank", "rank r", "LoRA rank: capacity of the update (8-64; 16 is the usual start)"),
    ("alpha", "alpha", "scaling; often 2 x rank"),
    ("epochs", "epochs", "passes over the data (1-5; fewer is often better)"),
    ("lr", "learning rate", "LoRA takes higher rates than full fine-tuning (1e-5 .. 3e-4)"),
]


class TrainingScreen(WizardScreen):
    step = 2

    def body(self) -> ComposeResult:
        from edgetune.train import plan
        t = self.app.recipe.train
        p = plan(recipe_mod.TrainSpec())
        yield Label("Training", classes="title")
        yield Static(f"Detected: {p.device.upper()} -> auto means {p.method.upper()} in {p.dtype}.", classes="hint")
        with Horizontal(classes="field"):
            yield Label("method", classes="field-label")
            yield Select([("auto (QLoRA on CUDA, LoRA on CPU)", "auto"), ("QLoRA (4-bit NF4 base)", "qlora"),
                          ("LoRA (16/32-bit base)", "lora")], value=t.method, allow_blank=False, id="method")
        with Horizontal(classes="field"):
            yield Label("targets", classes="field-label")
            yield Select([("q,v (small)", "qv"), ("attention q,k,v,o", "attn"), ("all linear layers", "all-linear")],
                         value=t.targets if t.targets in recipe_mod.TARGET_PRESETS else "all-linear",
                         allow_blank=False, id="targets")
        for attr, label, help_text in FIELDS + [("max_length", "max length", "tokens per row; longer rows are cut")]:
            value = getattr(self.app.recipe.data if attr == "max_length" else t, attr)
            with Horizontal(classes="field"):
                yield Label(label, classes="field-label")
                yield Input(value=str(value), id=f"f-{attr}", classes="field-input")
                yield Static(help_text, classes="field-help")

    def apply(self) -> None:
        r = self.app.recipe
        values = {"method": self.query_one("#method", Select).value,
                  "targets": self.query_one("#targets", Select).value}
        for attr, *_ in FIELDS + [("max_length",)]:
            values[attr] = self.query_one(f"#f-{attr}", Input).value.strip()
        train = {k: v for k, v in values.items() if k != "max_length"}
        for k in ("rank", "alpha"):
            train[k] = _int(train[k], f"train.{k}")
        try:
            train["epochs"], train["lr"] = float(train["epochs"]), float(train["lr"])
        except ValueError:
            raise EdgetuneError("train: epochs and learning rate must be numbers") from None
        updated = recipe_mod.from_dict({**r.to_dict(), "train": {**r.to_dict()["train"], **train},
                                        "data": {**r.to_dict()["data"],
                                                 "max_length": _int(values["max_length"], "data.max_length")}},
                                       "settings")
        self.app.recipe = updated

    def next_screen(self):
        from .export import ExportScreen
        return ExportScreen()


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise EdgetuneError(f"settings: {name} {text!r} must be a whole number") from None
