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


def progress_line(e: Event) -> str:
    """The live numbers of a progress event, e.g. 'train 12/90  loss 1.2345  lr 2.00e-04  ETA 0:41'.
    The CLI and the TUI both render progress with it."""
    parts = [f"{e.phase} {e.step}/{e.total}" if e.step is not None and e.total else e.phase]
    for label, value, fmt in (("loss", e.loss, ".4f"), ("eval", e.eval_loss, ".4f"), ("lr", e.lr, ".2e"),
                              ("tok/s", e.tokens_per_s, ".0f"), ("mem MiB", e.memory_mb, ".0f")):
        if value is not None:
            parts.append(f"{label} {value:{fmt}}")
    if e.eta_s is not None:
        parts.append(f"ETA {int(e.eta_s) // 60}:{int(e.eta_s) % 60:02d}")
    if e.message and e.phase != "train":
        parts.append(e.message)
    return "  ".join(parts)


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
