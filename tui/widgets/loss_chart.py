"""A small line chart of train and eval loss, drawn with braille dots (2x4 per character cell)."""
from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # braille bit for (row, col) in a cell


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

    def render(self) -> Text:
        width, height = max(self.size.width - 8, 8), max(self.size.height - 1, 2)
        points = self.train + self.eval
        if not points:
            return Text("loss: waiting for the first logged step", style="dim")
        lo, hi = min(v for _, v in points), max(v for _, v in points)
        last = max(s for s, _ in points) or 1
        span = (hi - lo) or 1.0
        cells = [[0] * width for _ in range(height)]
        owner = [[""] * width for _ in range(height)]
        for series, style in ((self.train, "cyan"), (self.eval, "magenta")):
            for step, value in series:
                x = min(int(step / last * (width * 2 - 1)), width * 2 - 1)
                y = min(int((hi - value) / span * (height * 4 - 1)), height * 4 - 1)
                cells[y // 4][x // 2] |= _DOTS[y % 4][x % 2]
                owner[y // 4][x // 2] = style
        text = Text()
        for row in range(height):
            label = f"{hi:6.3f} " if row == 0 else f"{lo:6.3f} " if row == height - 1 else " " * 7
            text.append(label, style="dim")
            for col in range(width):
                text.append(chr(0x2800 + cells[row][col]), style=owner[row][col] or "dim")
            text.append("\n")
        text.append(f"{'':7}train ", style="cyan")
        text.append("eval", style="magenta")
        text.append(f"   step {last}", style="dim")
        return text
