"""Keys and what each screen is for."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP = """[b]edgetune[/b]: dataset + base model -> fine-tuned, quantized GGUF, smoke-tested on the CPU.

[b]Keys[/b]
  Tab Shift+Tab  move between fields    Enter   press, submit, pick
  Ctrl+N  Esc    next / back (wizard)   Space   tick a checkbox
  ? F1           this help              q       quit (asks in a run)
  Ctrl+T         chat with a GGUF       Ctrl+B  batch-convert adapters
  Ctrl+C Esc     cancel a run (asks)    Ctrl+S Esc  stop a chat reply
  Ctrl+R         regenerate the reply   Ctrl+O  edit the last message
  chat commands  /reset /system TEXT /save [FILE] /help /exit

[b]Screens[/b]
  Runs    the runs made so far: Open, Chat, Serve, Resume, Delete, New
  Wizard  base model -> dataset -> training -> export -> summary -> Run
  Run     steps, live loss, log; Cancel stops at a safe point, keeps
          finished steps; then the smoke table and Chat with any GGUF
  Chat    any GGUF on the CPU, streamed; a second file compares them;
          a run's conversation is kept (chat.jsonl) and reopened
  Serve   an OpenAI-compatible API on 127.0.0.1, URL and curl shown
  Batch   every PEFT adapter in a folder -> GGUF files, one row each"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Static(HELP)
            yield Button("Close", id="close", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()

    def action_close(self) -> None:
        self.dismiss()
