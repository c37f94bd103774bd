"""Keys and what each screen is for."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP = """[b]edgetune[/b]: dataset + base model -> fine-tuned, quantized GGUF, smoke-tested on the CPU.

[b]Keys[/b]
  Tab / Shift+Tab   move between fields        Enter     press a button
  Ctrl+N / Esc      next / back in the wizard  ?  F1     this help
  Ctrl+T            chat with a GGUF           Ctrl+B    batch-convert adapters
  q                 quit (asks during a run)

[b]Screens[/b]
  Wizard  base model -> dataset -> training -> export -> summary -> Run
  Run     steps, live loss, log; Cancel stops at a safe point and keeps what is done
  Chat    any GGUF on the CPU, streamed; compare two files side by side
  Batch   every PEFT adapter in a folder -> GGUF files, one row each"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(HELP)
            yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss()
