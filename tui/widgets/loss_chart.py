"""A small line chart of train and eval loss, drawn with braille dots (2x4 per character cell)."""
from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # braille bit for (row, col) in a cell
LABEL_WIDTH = 7


class LossChart(Widget):
    DEFAULT_CSS = "LossChart { height: 8; }"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []

    def add(self, step: int, loss: float | None = None, eval_loss: float | None = None) -> None:
        if loss is not None:
            self.train.append((step, loss))
        if eval_loss is not None:
            self.eval.append((step, eval_loss))
        self.refresh()

    def clear(self) -> None:
        self.train, self.eval = [], []
        self.refresh()

    def render(self) -> Text:
        width, height = max(self.size.width - LABEL_WIDTH, 8), max(self.size.height - 1, 2)
        points = self.train + self.eval
        if not points:
            return Text("loss: waiting for the first logged step", style="dim")
        lo, hi = min(v for _, v in points), max(v for _, v in points)
        first, last = min(s for s, _ in points), max(s for s, _ in points)
        cells = [[0] * width for _ in range(height)]
        owner = [[""] * width for _ in range(height)]

        def dot(step: int, value: float) -> tuple[int, int]:
            x = round((step - first) / ((last - first) or 1) * (width * 2 - 1))
            y = round((hi - value) / ((hi - lo) or 1.0) * (height * 4 - 1))
            return x, y

        for series, style in ((self.train, "cyan"), (self.eval, "magenta")):
            dots = [dot(s, v) for s, v in series]
            for (x0, y0), (x1, y1) in zip(dots, dots[1:] or dots):
                for x, y in _segment(x0, y0, x1, y1):
                    cells[y // 4][x // 2] |= _DOTS[y % 4][x % 2]
                    owner[y // 4][x // 2] = style
        text = Text()
        for row in range(height):
            label = f"{hi:6.3f} " if row == 0 else f"{lo:6.3f} " if row == height - 1 else " " * LABEL_WIDTH
            text.append(label, style="dim")
            for col in range(width):
                text.append(chr(0x2800 + cells[row][col]), style=owner[row][col] or "dim")
            text.append("\n")
        text.append(" " * LABEL_WIDTH + "train", style="cyan")
        text.append("  eval", style="magenta")
        text.append(f"  steps {first}-{last}", style="dim")
        return text


def _segment(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The dots on a straight line between two dots, both ends included."""
    n = max(abs(x1 - x0), abs(y1 - y0), 1)
    return [(round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n)) for i in range(n + 1)]
