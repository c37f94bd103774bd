"""What every wizard step shares: a title, a one-line hint, Back/Next, and an inline error line."""
from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Static

from edgetune import EdgetuneError


class WizardScreen(Screen):
    """Subclasses set `page_title` and implement `body()` and `apply()` (write fields into the recipe);
    their place in the wizard is their place in the app's PAGES (tui/screens/pages.py)."""

    page_title = ""

    @property
    def step(self) -> int:
        return self.pages().index(type(self))

    def pages(self) -> tuple[type[WizardScreen], ...]:
        return self.app.PAGES
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+n", "next", "Next")]
    AUTO_FOCUS = ".wizard-body *"  # the step's first field, not the scrolling body: arrow keys work at once

    def compose(self) -> ComposeResult:
        yield Header()
        trail = "  ›  ".join(f"[b]{p.page_title}[/b]" if i == self.step else p.page_title for i, p in enumerate(self.pages()))
        yield Static(trail, classes="trail")
        with VerticalScroll(classes="wizard-body"):
            yield from self.body()
        yield Static("", id="error", classes="error", markup=False)  # messages are text: [x] stays
        with Horizontal(classes="nav"):
            yield Button("Back", id="back", disabled=self.step == 0)
            yield Button("Run" if self.step == len(self.pages()) - 1 else "Next", id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def apply(self) -> Callable[[], None] | None:
        """Copy the widgets' values into self.app.recipe; raise EdgetuneError on bad input. A check
        that can block (a hub id: a network round trip, up to its timeout) is returned instead of
        run: the step runs it in a thread, the screen stays live, and it moves on when it passes."""

    def next_screen(self) -> Screen | None:
        """The next page (the last page returns the run instead)."""
        following = self.pages()[self.step + 1: self.step + 2]
        return following[0]() if following else None

    def show_error(self, message: str) -> None:
        self.query_one("#error", Static).update(message)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "next":
            self.action_next()

    def action_back(self) -> None:
        stack = self.app.screen_stack
        if self.step > 0 or (len(stack) > 1 and getattr(stack[-2], "home", False)):  # first step: back to Runs
            self.app.pop_screen()

    def action_next(self) -> None:
        if self.query_one("#next", Button).disabled:
            return  # a check is under way
        try:
            pending = self.apply()
        except EdgetuneError as e:
            self.show_error(str(e))
            return
        if pending is None:
            self.advance()
        else:
            self.query_one("#next", Button).disabled = True
            self.show_error("checking…")
            self.run_check(pending)

    @work(thread=True, exclusive=True, group="wizard-check")
    def run_check(self, pending: Callable[[], None]) -> None:
        try:
            pending()
        except EdgetuneError as e:
            self.app.call_from_thread(self.check_failed, str(e))
            return
        self.app.call_from_thread(self.advance)

    def check_failed(self, message: str) -> None:
        self.query_one("#next", Button).disabled = False
        self.show_error(message)

    def advance(self) -> None:
        self.query_one("#next", Button).disabled = False
        self.show_error("")
        screen = self.next_screen()
        if screen is not None:
            self.app.push_screen(screen)
