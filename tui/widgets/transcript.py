"""One column of a conversation; the reply being streamed is its last line. Text from the model is
shown with its control characters escaped (edgetune.chat.shown) and its brackets literal (no markup is parsed).

A streamed reply is redrawn ~10 times a second, and the redraw is kept to the reply's own widget:
the screen is laid out again (every widget re-arranged, every line that moves repainted, the
costliest redraw) only when the reply outgrows its height, which grows HEADROOM lines at a time."""
from __future__ import annotations

from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from edgetune import shown

HEADROOM = 3  # blank lines a streaming reply keeps below its text: a layout every few lines, not every line


def _markup(who: str, text: str, stats: str = "") -> Content:
    """The line as styled content, never parsed as markup: a model's brackets are its own."""
    return Content.assemble((who, "bold"), " ", shown(text), *(("\n", (stats, "dim")) if stats else ()))


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

    def show_reply(self, line: Static, text: str, stats: str = "", done: bool = False) -> None:
        """Show a reply as it streams; `done`: it ended, the headroom goes."""
        content = _markup("model:", text, stats)
        width, height = line.content_size
        needed = content.get_height(line.styles, width) if width else 0
        if done:
            line.styles.min_height = None
        elif not width or needed > height:
            line.styles.min_height = needed + HEADROOM
        else:  # the new text fits: only this widget is redrawn
            line.update(content, layout=False)
            return
        line.update(content)
        self.scroll_end(animate=False)

    def remove_last(self, who: str) -> None:
        """Remove the last line of `who` (you, model): a reply to regenerate, a message to edit."""
        lines = list(self.query(f".msg-{who}"))
        if lines:
            lines[-1].remove()
