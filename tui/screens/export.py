"""Wizard step 4: which GGUF files to produce and where."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, SelectionList, Static

from edgetune import recipe as recipe_mod
from edgetune.errors import EdgetuneError

from .wizard import WizardScreen

OFFERED = [("Q8_0", "8.5 bits/w, near lossless"), ("Q6_K", "6.6 bits/w"), ("Q5_K_M", "5.7 bits/w"),
           ("Q4_K_M", "4.9 bits/w, the usual CPU choice"), ("Q4_0", "4.5 bits/w, fastest")]


class ExportScreen(WizardScreen):
    step = 3

    def body(self) -> ComposeResult:
        r = self.app.recipe
        yield Label("Export", classes="title")
        yield Static("An F16 GGUF is always written; each type below is quantized from it and smoke-tested.",
                     classes="hint")
        yield SelectionList(*[(f"{q:7} {text}", q, q in r.export.quants) for q, text in OFFERED], id="quants")
        with Horizontal(classes="field"):
            yield Label("run name", classes="field-label")
            yield Input(value=r.name, id="name", classes="field-input")
        with Horizontal(classes="field"):
            yield Label("runs folder", classes="field-label")
            yield Input(value=r.runs_dir, id="runs_dir", classes="field-input")

    def apply(self) -> None:
        quants = list(self.query_one("#quants", SelectionList).selected)
        if not quants:
            raise EdgetuneError("export: pick at least one quant type")
        r = self.app.recipe
        values = r.to_dict()
        values["name"] = self.query_one("#name", Input).value.strip()
        values["runs_dir"] = self.query_one("#runs_dir", Input).value.strip() or "runs"
        values["export"]["quants"] = quants
        self.app.recipe = recipe_mod.from_dict(values, "export")

    def next_screen(self):
        from .summary import SummaryScreen
        return SummaryScreen()
