"""Token-length histogram as horizontal bars (fits 80 columns)."""
from __future__ import annotations

from textual.widgets import Static


class Histogram(Static):
    def show(self, buckets: list[tuple[int, int]], title: str = "") -> None:
        peak = max((c for _, c in buckets), default=0) or 1
        lines = [title] if title else []
        for upper, count in buckets:
            bar = "█" * max(0, round(30 * count / peak))
            lines.append(f"≤{upper:>6} │{bar} {count}")
        self.update("\n".join(lines))
