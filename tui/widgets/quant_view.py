"""What quantization cost, from quant.json: a table of every file (every sweep candidate) and a plot
of file size against mean KL divergence, the recommended file marked."""
from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from edgetune import QuantFile, QuantResult

PLOT_WIDTH, PLOT_HEIGHT = 44, 7
MARKS = "abcdefghijklmnopqrstuvwxyz"


def quant_text(result: QuantResult) -> Text:
    files = [f for f in result.files if f.measured]
    text = Text()
    if result.sweep:
        text.append(f"{result.sweep.why}\n", style="bold" if result.sweep.met else "bold red")
    im = result.imatrix
    if im and not im.path:
        text.append(f"No importance matrix: {im.note}\n", style="yellow")
    for note in result.notes:
        text.append(f"{note}\n", style="yellow")
    if not files:
        return text
    text.append(f"{'':2}{'file':22}{'MiB':>8}{'KLD':>9}{'p99':>8}{'top-1':>7}{'acc':>6}{'kept':>6}\n", style="dim")
    for mark, f in zip(MARKS, files):
        kept = "—" if f.gain_kept is None else f"{f.gain_kept:.0%}"
        acc = "—" if f.accuracy is None else f"{f.accuracy:.0%}"
        style = "bold green" if f.recommended else "red" if f.gave_back else ""
        text.append(f"{mark} {f.label[:22]:22}{f.size / 2**20:8.2f}{f.mean_kld:9.4f}{f.p99_kld:8.3f}"
                    f"{f.top1:7.1%}{acc:>6}{kept:>6}" + (" ★" if f.recommended else "") + "\n", style=style)
    if len(files) > 1:
        text.append(plot(files))
    return text


def plot(files: list[QuantFile]) -> Text:
    """Size (x) against mean KLD (y, log scale), one letter per file."""
    xs = [f.size / 2**20 for f in files]
    ys = [math.log10(max(f.mean_kld, 1e-6)) for f in files]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * PLOT_WIDTH for _ in range(PLOT_HEIGHT)]
    for mark, x, y in zip(MARKS, xs, ys):
        col = round((x - x0) / ((x1 - x0) or 1) * (PLOT_WIDTH - 1))
        row = round((y1 - y) / ((y1 - y0) or 1) * (PLOT_HEIGHT - 1))
        grid[row][col] = mark
    text = Text("\nmean KLD (log) against file size\n", style="dim")
    for i, row in enumerate(grid):
        label = f"{10 ** y1:8.4f} " if i == 0 else f"{10 ** y0:8.4f} " if i == PLOT_HEIGHT - 1 else " " * 9
        text.append(label + "│", style="dim")
        text.append("".join(row) + "\n")
    text.append(" " * 9 + "└" + "─" * PLOT_WIDTH + "\n", style="dim")
    text.append(f"{'':10}{x0:<8.1f} MiB{'':{max(PLOT_WIDTH - 22, 1)}}{x1:>8.1f} MiB\n", style="dim")
    return text


class QuantView(Static):
    def show(self, result: QuantResult | None) -> None:
        self.display = bool(result and result.files)
        if self.display:
            self.update(quant_text(result))
