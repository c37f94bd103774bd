"""One column of a conversation; the reply being streamed is its last line. Text from the model is
shown with its control characters escaped (edgetune.chat.shown) and its brackets literal (no markup is parsed)."""
from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from edgetune import shown


def _markup(who: str, text: str, stats: str = "") -> Text:
    """The line as styled text, never parsed as markup: a model's brackets are its own."""
    return Text.assemble((who, "bold"), " ", shown(text), *(("\n", (stats, "dim")) if stats else ()))


class Transcript(VerticalScroll):
    def __init__(self, title: str = "", **kwargs):
        super().__init__(**kwargs)
        self.border_title = title

    def add(self, who: str, text: str = "", after: Static | None = None) -> Static:
        line = Static(_markup(who, text), classes=f"msg msg-{who.split()[0].rstrip(':')}")
        self.mount(line, after=after)
        self.scroll_end(animate=False)
        return line

    def show(self, line: Static, who: str, text: str) -> None:
        """Rewrite a line (a queued message once it is sent)."""
        line.update(_markup(who, text))

    def show_reply(self, line: Static, text: str, stats: str = "") -> None:
        line.update(_markup("model:", text, stats))
        self.scroll_end(animate=False)

    def remove_last(self, who: str) -> None:
        """Remove the last line of `who` (you, model): a reply to regenerate, a message to edit."""
        lines = list(self.query(f".msg-{who}"))
        if lines:
            lines[-1].remove()
