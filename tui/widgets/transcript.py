"""One column of a conversation; the reply being streamed is its last line."""
from __future__ import annotations

from rich.markup import escape
from textual.containers import VerticalScroll
from textual.widgets import Static


class Transcript(VerticalScroll):
    def __init__(self, title: str = "", **kwargs):
        super().__init__(**kwargs)
        self.border_title = title

    def add(self, who: str, text: str = "") -> Static:
        line = Static(f"[b]{who}[/b] {escape(text)}", classes=f"msg msg-{who.rstrip(':')}")
        self.mount(line)
        self.scroll_end(animate=False)
        return line

    def show_reply(self, line: Static, text: str, stats: str = "") -> None:
        line.update(f"[b]model:[/b] {escape(text)}" + (f"\n[dim]{escape(stats)}[/dim]" if stats else ""))
        self.scroll_end(animate=False)
