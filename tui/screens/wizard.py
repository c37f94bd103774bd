"""What every wizard step shares: a title, a one-line hint, Back/Next, and an inline error line."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from edgetune.errors import EdgetuneError

STEPS = ("Base model", "Dataset", "Training", "Export", "Summary")


class WizardScreen(Screen):
    """Subclasses set `step` and implement `body()` and `apply()` (write fields into the recipe)."""

    step = 0
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+n", "next", "Next")]

    def compose(self) -> ComposeResult:
        yield Header()
        trail = "  ›  ".join(f"[b]{s}[/b]" if i == self.step else s for i, s in enumerate(STEPS))
        yield Static(trail, classes="trail")
        with VerticalScroll(classes="wizard-body"):
            yield from self.body()
        yield Static("", id="error", classes="error")
        with Horizontal(classes="nav"):
            yield Button("Back", id="back", disabled=self.step == 0)
            yield Button("Run" if self.step == len(STEPS) - 1 else "Next", id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def apply(self) -> None:
        """Copy the widgets' values into self.app.recipe; raise EdgetuneError on bad input."""

    def next_screen(self) -> Screen | None:
        return None

    def show_error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "next":
            self.action_next()

    def action_back(self) -> None:
        if self.step > 0:
            self.app.pop_screen()

    def action_next(self) -> None:
        try:
            self.apply()
        except EdgetuneError as e:
            self.show_error(str(e))
            return
        self.show_error("")
        screen = self.next_screen()
        if screen is not None:
            self.app.push_screen(screen)
