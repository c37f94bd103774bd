"""The edgetune terminal UI: a wizard from dataset to GGUF, a live run view, chat and batch screens.

Everything heavy runs in thread workers; the core posts progress through edgetune.events, which
the screens receive via `call_from_thread`. The core never imports Textual.
"""
from __future__ import annotations

import copy
from typing import Callable

from textual.app import App
from textual.binding import Binding

from edgetune import recipe as recipe_mod
from edgetune.recipe import Recipe

Runner = Callable  # pipeline.run's signature: (recipe, on_event, cancel) -> dict


def default_runner(recipe, on_event, cancel):
    from edgetune import pipeline
    return pipeline.run(recipe, on_event, cancel)


class EdgetuneApp(App):
    TITLE = "edgetune"
    SUB_TITLE = "dataset + base model -> tested GGUF for the CPU"
    CSS_PATH = "styles.tcss"
    BINDINGS = [
        Binding("q", "quit_app", "Quit"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+t", "chat", "Chat"),
        Binding("ctrl+b", "batch", "Batch"),
    ]

    def __init__(self, recipe: Recipe | None = None, autostart: bool = False, runner: Runner | None = None):
        super().__init__()
        self.recipe = copy.deepcopy(recipe) if recipe else starting_recipe()
        self.autostart = autostart
        self.runner = runner or default_runner
        self.running = False  # a pipeline or batch run is in progress: quitting asks first

    def on_mount(self) -> None:
        if self.autostart:
            from .screens.run import RunScreen
            self.push_screen(RunScreen(self.recipe))
        else:
            from .screens.base_model import BaseModelScreen
            self.push_screen(BaseModelScreen())

    def action_help(self) -> None:
        from .screens.help import HelpScreen
        self.push_screen(HelpScreen())

    def action_chat(self, gguf: str = "") -> None:
        from .screens.chat import ChatScreen
        self.push_screen(ChatScreen(gguf))

    def action_batch(self) -> None:
        from .screens.batch import BatchScreen
        self.push_screen(BatchScreen())

    def action_quit_app(self) -> None:
        if not self.running:
            self.exit()
            return
        from .screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()
        self.push_screen(ConfirmScreen("A run is in progress. Quit anyway? (finished steps are kept; training "
                                       "resumes from its last checkpoint)"), answered)


def starting_recipe() -> Recipe:
    """The wizard starts from the demo recipe (settings that suit the demo), renamed."""
    r = recipe_mod.demo()
    r.name = "my-run"
    return r


def run_app(recipe: Recipe | None = None, autostart: bool = False) -> None:
    EdgetuneApp(recipe, autostart).run()
