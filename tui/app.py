"""The edgetune terminal UI: a wizard from dataset to GGUF, a live run view, chat and batch screens.

Everything heavy runs in thread workers; the core reports progress through edgetune.events, and
the workers post them to their screen as Textual messages (tui/messages.py), handled on the UI
thread by `on_core_event` / `on_job_finished`. The core never imports Textual.
"""
from __future__ import annotations

import copy
from typing import Callable

from textual.app import App
from textual.binding import Binding

from edgetune import CancelToken, ChatSession, Recipe, pipeline, threads
from edgetune import recipe as recipe_mod
from edgetune import serve as serve_mod

from .screens.base_model import BaseModelScreen
from .screens.batch import BatchScreen
from .screens.chat import ChatScreen
from .screens.confirm import ConfirmScreen
from .screens.help import HelpScreen
from .screens.pages import PAGES
from .screens.run import RunScreen
from .screens.runs import RunsScreen

Runner = Callable  # (recipe, on_event, cancel) -> smoke summary dict, as pipeline.run


def default_runner(recipe, on_event, cancel):
    with threads.for_ui():  # on the worker thread: every step leaves one CPU to the TUI
        return pipeline.run(recipe, on_event, cancel)


def default_chat_session(path: str, system: str = "", thread_count: int = 0):
    """thread_count 0: every CPU that is free, as `edgetune chat` takes (scripts/bench/chat.py sets it,
    as `--threads` does). Chat leaves no CPU to the TUI, unlike a run: its redraws are batched to ~10 a
    second and cost the reply ~4% (Gemma 3 270M Q4_K_M, 2 idle cores: 57.9 tok/s on 2 threads against
    60.2 in the CLI), where leaving a CPU gave 39.0 tok/s (scripts/bench/chat.py, 2026-12-06)."""
    return ChatSession(path, system=system, threads=thread_count)


class EdgetuneApp(App):
    TITLE = "edgetune"
    PAGES = PAGES  # the wizard's pages in order
    SUB_TITLE = "dataset + base model -> tested GGUF for the CPU"
    CSS_PATH = "styles.tcss"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("ctrl+t", "chat", "Chat"),
        Binding("ctrl+b", "batch", "Batch"),
    ]

    def __init__(self, recipe: Recipe | None = None, autostart: bool = False, runner: Runner | None = None,
                 chat_session: Callable | None = None, runs_dir: str | None = None,
                 server_process: Callable | None = None):
        """runs_dir: open on the Runs screen of that folder (the `edgetune` entry point does)."""
        super().__init__()
        self.recipe = copy.deepcopy(recipe) if recipe else starting_recipe()
        self.autostart = autostart
        self.runner = runner or default_runner
        self.chat_session = chat_session or default_chat_session  # (path, system) -> ChatSession-like
        self.running_tokens: set[CancelToken] = set()  # runs in progress: quitting asks, then cancels them
        self.data_stats = None  # the dataset step's token statistics (the training step shows cuts)
        self.proposed_max_length: int | None = None  # what the dataset step proposed, until the user edits it
        self.runs_dir = runs_dir
        self.servers: dict = {}  # GGUF path -> its `edgetune serve` child process (Serve buttons)
        self.server_process = server_process or serve_mod.ServerProcess  # (Target, log=) -> ServerProcess-like

    @property
    def running(self) -> bool:
        return bool(self.running_tokens)

    def on_mount(self) -> None:
        if self.autostart:
            self.push_screen(RunScreen(self.recipe))
        elif self.runs_dir is not None:
            self.push_screen(RunsScreen(self.runs_dir))
        else:
            self.push_screen(BaseModelScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_chat(self, gguf: str = "", compare_with: str = "") -> None:
        if not isinstance(self.screen, ChatScreen):
            self.push_screen(ChatScreen(gguf, compare_with))

    def action_batch(self) -> None:
        if not isinstance(self.screen, BatchScreen):
            self.push_screen(BatchScreen())

    async def action_quit(self) -> None:
        """Quit (q, Ctrl+Q); during a run, ask first, then cancel it so its thread stops at a safe point."""
        if not self.running:
            self.stop_servers()
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                for token in list(self.running_tokens):
                    token.cancel()
                self.stop_servers()
                self.exit()
        if not isinstance(self.screen, ConfirmScreen):
            self.push_screen(ConfirmScreen("A run is in progress. Quit anyway? Finished steps are kept; training "
                                           "resumes from its last checkpoint."), answered)


    def stop_servers(self) -> None:
        """Stop every server the Serve buttons started (each frees its port)."""
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


def starting_recipe() -> Recipe:
    """The wizard starts from the demo recipe (settings that suit the demo), renamed."""
    r = recipe_mod.demo()
    r.name = "my-run"
    return r


def run_app(recipe: Recipe | None = None, autostart: bool = False) -> None:
    """The TUI: on the runs under the recipe's runs_dir (or straight into a run when autostart)."""
    app = EdgetuneApp(recipe, autostart, runs_dir=None if autostart else starting_recipe().runs_dir)
    try:
        app.run()
    finally:
        app.stop_servers()
