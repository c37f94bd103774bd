"""What worker threads tell screens: Textual messages, posted from the worker (post_message is
thread-safe) and handled on the UI thread by `on_core_event` / `on_job_finished`."""
from __future__ import annotations

import threading

from textual.message import Message

from edgetune import EdgetuneError, Event

from .display import one_line

# transformers resolves its lazy imports unsafely when two threads import at once: workers that load
# tokenizers or configs (the dataset check, the training estimate) take this lock, one at a time.
TRANSFORMERS_LOCK = threading.Lock()


class CoreEvent(Message):
    """One progress event of a core job (pipeline run, batch conversion)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class JobFinished(Message):
    """A core job ended: its result, or the one-line error that stopped it."""

    def __init__(self, result, error: str | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


def finished(fn, *args) -> JobFinished:
    """Run a core call in a worker: its result, or its one-line error (a bug too: the UI must not die)."""
    try:
        return JobFinished(fn(*args))
    except EdgetuneError as e:
        return JobFinished(None, str(e))
    except Exception as e:
        return JobFinished(None, one_line(e))


class ReplyPiece(Message):
    """A chat reply so far, for transcript `index`."""

    def __init__(self, index: int, text: str) -> None:
        super().__init__()
        self.index = index
        self.text = text


class ReplyDone(Message):
    """A chat reply ended: its whole text, its speed line, or the error that cut it short."""

    def __init__(self, index: int, stats: str, error: str = "", text: str = "") -> None:
        super().__init__()
        self.index = index
        self.stats = stats
        self.error = error
        self.text = text
