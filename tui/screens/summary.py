"""Wizard step 5: everything chosen, as the recipe that will run (and can replay it)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Label, Static

from edgetune import RunFolder, budget_text

from .run import RunScreen
from .wizard import WizardScreen


def export_line(e) -> str:
    """The quant types, or what the auto sweep will look for."""
    if e.quants != ["auto"]:
        return ", ".join(e.quants)
    return (f"auto: the smallest file within {budget_text(e)}"
            + (", mixed types per tensor tried too" if e.auto_mixed else ""))


class SummaryScreen(WizardScreen):
    page_title = "Summary"

    def body(self) -> ComposeResult:
        r = self.app.recipe
        t = r.train
        yield Label("Summary", classes="title")
        yield Static(
            f"base      {r.base}\n"
            f"dataset   {r.data.path} ({r.data.format}, max {r.data.max_length} tokens, "
            f"{r.data.eval_split:.0%} held out)\n"
            f"training  {t.method}, r={t.rank} alpha={t.alpha} targets={t.targets}, lr {t.lr:g}, "
            f"{t.epochs:g} epochs, batch {t.batch_size}x{t.grad_accum}\n"
            f"export    {r.export.outtype.upper()} + {export_line(r.export)}\n"
            f"output    {RunFolder.of(r).gguf_dir}/", id="summary-text")
        yield Static("Run saves recipe.yaml in the run folder; edgetune run --recipe replays it.",
                     classes="hint")

    def next_screen(self):
        return RunScreen(self.app.recipe)
