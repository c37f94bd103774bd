"""A DirectoryTree that lists folders and only the files a picker can use (hidden entries left out)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.widgets import DirectoryTree


class PathTree(DirectoryTree):
    def __init__(self, path: str | Path, suffixes: tuple[str, ...] = (), **kwargs):
        super().__init__(path, **kwargs)
        self.suffixes = tuple(s.lower() for s in suffixes)  # empty: folders only

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        keep = []
        for p in paths:
            if p.name.startswith("."):
                continue
            try:
                is_dir = p.is_dir()
            except OSError:  # a dangling link or a folder we may not read
                continue
            if is_dir or (self.suffixes and p.suffix.lower() in self.suffixes):
                keep.append(p)
        return keep
