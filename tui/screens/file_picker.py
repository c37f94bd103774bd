"""Pick a file (by suffix) or a folder from a tree; dismisses with the path, or None when cancelled."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Static

from ..display import shown_path
from ..widgets.path_tree import PathTree


class FilePickerScreen(ModalScreen[str | None]):
    """`suffixes` set: Enter on a matching file picks it. Empty: pick the highlighted folder."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("backspace", "up", "Parent folder")]

    def __init__(self, title: str, start: str | Path = ".", suffixes: tuple[str, ...] = ()):
        super().__init__()
        self.title_text = title
        self.suffixes = suffixes
        self.root = starting_folder(start)
        self.chosen: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Static(self.title_text, classes="title")
            yield Static(shown_path(self.root), id="picker-root", classes="hint")
            yield PathTree(self.root, self.suffixes, id="tree")
            yield Static("", id="picker-choice", classes="hint")
            with Horizontal(classes="nav"):
                yield Button("Up", id="up")
                yield Button("Choose", id="choose", variant="primary", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#tree", PathTree).focus()
        if not self.suffixes:  # choosing a folder: the one we opened in is a fine answer
            self._offer(self.root)

    def _offer(self, path: Path) -> None:
        self.chosen = path
        self.query_one("#picker-choice", Static).update(f"choose: {shown_path(path)}")
        self.query_one("#choose", Button).disabled = False

    def on_tree_node_highlighted(self, event) -> None:
        entry = event.node.data
        if entry is None:
            return
        path = Path(entry.path)
        if (self.suffixes and path.is_file()) or (not self.suffixes and path.is_dir()):
            self._offer(path)

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(str(event.path))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "choose" and self.chosen is not None:
            self.dismiss(str(self.chosen))
        elif event.button.id == "up":
            self.action_up()
        elif event.button.id == "cancel":
            self.dismiss(None)

    def action_up(self) -> None:
        self.root = self.root.parent
        self.query_one("#picker-root", Static).update(shown_path(self.root))
        self.query_one("#tree", PathTree).path = self.root

    def action_cancel(self) -> None:
        self.dismiss(None)


def starting_folder(start: str | Path) -> Path:
    """The folder holding `start` (or `start` itself), falling back to the working folder."""
    path = Path(start or ".").expanduser()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path.resolve() if path.is_dir() else Path.cwd()
