"""One row per pipeline step: its state and how long it took (ticking while it runs)."""
from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import DataTable

from edgetune import STEPS, duration

STATE_STYLES = {"pending": "dim", "running": "bold yellow", "done": "green", "skipped": "cyan",
                "failed": "bold red", "stopped": "yellow"}
TIME_WIDTH = len("123m05s")  # the longest duration() a run shows
clock = time.monotonic  # tests pin it so snapshots do not show real durations


class StepTable(DataTable):
    def __init__(self, steps: tuple[str, ...] | None = None, **kwargs):
        super().__init__(show_cursor=False, **kwargs)
        self.steps = steps or STEPS
        self.started: dict[str, float] = {}
        self.states: dict[str, str] = {}

    def on_mount(self) -> None:
        # Fixed widths: a width that follows its cells lags a refresh behind a new time ('<1 m' for '<1 ms').
        widths = {"step": max(map(len, self.steps)), "state": max(map(len, STATE_STYLES)), "time": TIME_WIDTH}
        for column, width in widths.items():
            self.add_column(column, key=column, width=width)
        for name in self.steps:
            self.add_row(name, Text("pending", style="dim"), "", key=name)
            self.states[name] = "pending"

    def reset(self) -> None:
        self.started.clear()
        for name in list(self.states):  # empty before on_mount: nothing to reset
            self.set_state(name, "pending")
            self.update_cell(name, "time", "")

    def set_state(self, name: str, state: str) -> None:
        if name not in self.steps:
            return
        if state == "running":
            self.started[name] = clock()
        self.states[name] = state
        self.update_cell(name, "state", Text(state, style=STATE_STYLES.get(state, "")))
        self._show_time(name)

    def _show_time(self, name: str) -> None:
        if name in self.started and self.states[name] != "skipped":
            self.update_cell(name, "time", duration(clock() - self.started[name]))
            if self.states[name] != "running":
                del self.started[name]  # frozen at its final value

    def tick(self) -> None:
        for name, state in self.states.items():
            if state == "running":
                self._show_time(name)

    def stop_running(self, state: str) -> None:
        for name, current in list(self.states.items()):
            if current == "running":
                self.set_state(name, state)

    def state(self, name: str) -> str:
        return self.states[name]
