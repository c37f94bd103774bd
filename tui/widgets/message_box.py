"""The chat input: several lines of text. Enter sends; Shift+Enter (where the terminal reports it)
or Ctrl+J starts a new line; a paste is inserted whole, newlines and all."""
from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class MessageBox(TextArea):
    NEWLINE_KEYS = ("shift+enter", "ctrl+j")

    @dataclass
    class Submitted(Message):
        box: "MessageBox"
        text: str

    def __init__(self, placeholder: str = "", **kwargs):
        super().__init__(soft_wrap=True, show_line_numbers=False, placeholder=placeholder, **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in self.NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)
