"""Handing results from worker threads to the UI thread."""
from __future__ import annotations

import threading

from textual.app import App
from textual.css.query import NoMatches

# transformers resolves its lazy imports unsafely when two threads import at once: workers that load
# tokenizers, configs or models take this lock (one at a time).
TRANSFORMERS_LOCK = threading.Lock()


def deliver(app: App, callback, *args) -> None:
    """Run `callback(*args)` on the UI thread; drop it when the app or the screen is already gone
    (a check or a run finishing after the user left must not crash the worker)."""
    try:
        app.call_from_thread(callback, *args)
    except (RuntimeError, NoMatches):
        pass
