"""The smoke test's verdict per GGUF file, as a table."""
from __future__ import annotations

from textual.widgets import DataTable

from edgetune import FileCheck


class SmokeTable(DataTable):
    COLUMNS = ("file", "MiB", "bits/w", "ppl", "agree", "acc", "tok/s", "verdict")

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)
        self.cursor_type = "row"

    def show(self, files: list[FileCheck]) -> None:
        self.clear()
        for f in files:
            self.add_row(f.file, f"{f.bytes / 2**20:.1f}", f"{f.bits_per_weight:.2f}", f"{f.perplexity:.3f}",
                         f"{f.agreement:.0%}", f"{f.accuracy:.0%}", f"{f.gen_tokens_per_s or 0:.0f}",
                         "pass" if f.passed else "FAIL", key=f.path)
