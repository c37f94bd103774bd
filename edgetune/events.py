"""Progress events: the one interface between long-running core steps and whoever renders them.

A step takes `on_event: Callback` and calls it with `Event`s. The CLI renders them as progress
bars and log lines, the TUI posts them to its widgets; the core never knows which.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

# What a long job is doing: the pipeline's steps, then the jobs beside it.
PHASES = ("base", "data", "train", "merge", "convert", "quantize", "smoke", "batch", "chat")
# step_*: a pipeline step's boundaries (pipeline.run emits them, renderers mark steps by them);
# start/progress/done: work inside a step; log: a line to show; metric: a measured result.
STEP_KINDS = ("step_start", "step_done", "step_skip", "step_fail")
KINDS = STEP_KINDS + ("start", "progress", "done", "log", "metric")


@dataclass
class Event:
    phase: str  # one of PHASES
    kind: str  # one of KINDS
    message: str = ""
    step: int | None = None
    total: int | None = None
    data: dict = field(default_factory=dict)  # step-specific extras (file sizes, smoke rows)
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.phase not in PHASES or self.kind not in KINDS:
            raise ValueError(f"event ({self.phase!r}, {self.kind!r}): phase must be one of {PHASES}, "
                             f"kind one of {KINDS}")

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}


@dataclass
class TrainMetrics(Event):
    """A training progress event with its numbers (the loss chart and progress lines read them)."""

    phase: str = "train"
    kind: str = "progress"
    loss: float | None = None
    eval_loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    memory_mb: float | None = None


Callback = Callable[[Event], None]


def progress_line(e: Event) -> str:
    """The live numbers of a progress event, e.g. 'train 12/90  loss 1.2345  lr 2.00e-04  ETA 0:41'.
    The CLI and the TUI both render progress with it."""
    parts = [f"{e.phase} {e.step}/{e.total}" if e.step is not None and e.total else e.phase]
    if isinstance(e, TrainMetrics):
        for label, value, fmt in (("loss", e.loss, ".4f"), ("eval", e.eval_loss, ".4f"), ("lr", e.lr, ".2e"),
                                  ("tok/s", e.tokens_per_s, ".0f"), ("mem MiB", e.memory_mb, ".0f")):
            if value is not None:
                parts.append(f"{label} {value:{fmt}}")
        if e.eta_s is not None:
            parts.append(f"ETA {int(e.eta_s) // 60}:{int(e.eta_s) % 60:02d}")
    if e.message:
        parts.append(e.message)
    return "  ".join(parts)


def duration(seconds: float) -> str:
    """A step's time with its unit, never '0.0 s': '35 ms', '4.2 s', '12m05s'. The CLI and the
    TUI's step table both show times with it."""
    seconds = max(0.0, seconds)
    if seconds < 0.0005:
        return "<1 ms"
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


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
