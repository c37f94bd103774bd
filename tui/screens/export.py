"""Wizard step 4: which GGUF files to produce and where."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from edgetune import EdgetuneError
from edgetune import recipe as recipe_mod
from edgetune.convert.filetypes import FILE_TYPES

from ..widgets.toggles import Checkbox, SelectionList
from .wizard import WizardScreen


def offered(recipe_quants: list[str]) -> list[str]:
    """The registry's short list of quantized types, plus any other type the recipe already asks for."""
    short = [name for name, t in FILE_TYPES.items() if t.offered and not t.unquantized]
    return short + [q for q in recipe_quants if q not in short]


class ExportScreen(WizardScreen):
    page_title = "Export"

    def body(self) -> ComposeResult:
        r = self.app.recipe
        self.offered = offered([q for q in r.export.quants if q != "auto"])
        yield Label("Export", classes="title")
        yield Static(f"An {r.export.outtype.upper()} GGUF is always written; each type ticked below is "
                     "quantized from it and smoke-tested.", classes="hint")
        auto = r.export.quants == ["auto"]
        yield SelectionList(("auto    sweep types, keep the smallest within the budget", "auto", auto),
                            *[(f"{q:7} {FILE_TYPES[q].bits:.1f} bits/w, {FILE_TYPES[q].about}", q,
                               q in r.export.quants) for q in self.offered], id="quants")
        with Horizontal(classes="field"):
            yield Label("auto budget", classes="field-label")
            yield Input(value=f"{r.export.auto_min_top1 * 100:g}", id="min_top1", classes="field-input", compact=True)
            yield Static("% of next tokens whose top-1 matches F16", classes="field-help")
        yield Checkbox("auto: also try mixed types per tensor (slower)",
                       value=r.export.auto_mixed, id="auto_mixed", classes="field-check", compact=True)
        with Horizontal(classes="field"):
            yield Label("run name", classes="field-label")
            yield Input(value=r.name, id="name", classes="field-input", compact=True)
            yield Static("names the run folder", classes="field-help")
        with Horizontal(classes="field"):
            yield Label("runs folder", classes="field-label")
            yield Input(value=r.runs_dir, id="runs_dir", classes="field-input", compact=True)
            yield Static("", id="out-dir", classes="field-help")

    def on_mount(self) -> None:
        self._show_out_dir()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show_out_dir()

    def _show_out_dir(self) -> None:
        name = self.query_one("#name", Input).value.strip() or "?"
        runs = self.query_one("#runs_dir", Input).value.strip() or "runs"
        self.query_one("#out-dir", Static).update(f"output: {runs}/{name}/gguf/")

    def apply(self) -> None:
        ticked = set(self.query_one("#quants", SelectionList).selected)
        quants = ["auto"] if "auto" in ticked else [q for q in self.offered if q in ticked]  # list order
        if not quants:
            raise EdgetuneError("export: tick at least one quant type (space ticks)")
        values = self.app.recipe.to_dict()
        values["name"] = self.query_one("#name", Input).value.strip()
        values["runs_dir"] = self.query_one("#runs_dir", Input).value.strip() or "runs"
        values["export"]["quants"] = quants
        values["export"]["auto_mixed"] = self.query_one("#auto_mixed", Checkbox).value
        top1 = self.query_one("#min_top1", Input).value.strip()
        try:
            values["export"]["auto_min_top1"] = float(top1) / 100
        except ValueError:
            raise EdgetuneError(f"export: auto budget {top1!r} must be a percentage such as 98") from None
        self.app.recipe = recipe_mod.from_dict(values, "export")

