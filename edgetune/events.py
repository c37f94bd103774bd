"""Progress events: the one interface between long-running core steps and whoever renders them.

A step takes `on_event: Callback` and calls it with `Event`s. The CLI renders them as progress
bars and log lines, the TUI posts them to its widgets; the core never knows which.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

PHASES = ("data", "train", "merge", "convert", "quantize", "smoke")


@dataclass
class Event:
    phase: str  # one of PHASES (or "batch", "chat" for the side tools)
    kind: str  # "start" | "progress" | "log" | "metric" | "done" | "skip" | "error"
    message: str = ""
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None
    data: dict = field(default_factory=dict)  # step-specific extras (file sizes, smoke rows)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}


Callback = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A callback that drops everything, for callers that do not render progress."""


class Cancelled(Exception):
    """Raised inside a step when the user asked to stop; what was finished is kept."""


class CancelToken:
    """Set from the UI thread, polled by the core at safe points (between steps, on log steps)."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled("cancelled by the user")
