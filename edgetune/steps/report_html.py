"""report.html: a run as people look at it, in one self-contained file that opens from disk (no network,
no script): the training curves, the quantization picture (every file's size against its KL divergence,
top-1 agreement and held-out accuracy, the recommended file marked, the auto sweep's budget drawn), the
verdicts, the per-file tables and base vs fine-tuned answers on the held-out prompts.

Charts are matplotlib figures saved as SVG and embedded inline. Everything is read from the run's typed
records (RunFolder's readers); a record that is missing or unreadable is shown as such, never raised.
The chart elements a test or a reader may look for carry ids (matplotlib gids): `train-loss`, `eval-loss`,
`learning-rate`, `tokens-per-s`, `files-kld`/`-top1`/`-accuracy` (`files-out-*`: outside the budget,
`files-unmeasured-*`: sweep candidates with a size only), `recommended-kld`/`-top1`/`-accuracy`, `budget-*`,
`label-<panel>-<n>` (the files' names).
"""
from __future__ import annotations

import html
import io
import os
import sys
import time
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgetune import __version__
from edgetune.errors import EdgetuneError
from edgetune.fsutil import write_text
from edgetune.inputs.recipe import Recipe
from edgetune.results import FileCheck, QuantFile, QuantResult, RunState, SmokeResult, TrainLogEntry, TrainResult
from edgetune.runs import RunFolder
from edgetune.steps.report import verdict_lines

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TRAIN, EVAL, ACCENT, MUTED, GOOD, BAD = "#1f77b4", "#d62728", "#ff7f0e", "#8c8c8c", "#2ca02c", "#d62728"
LABEL_PT = 7  # the files' names on the quantization panels
SVG_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "edgetune", "font.size": 9,
             "axes.spines.top": False, "axes.spines.right": False}


@dataclass
class RunRecords:
    """What report.html is made of: each record, or None when it is missing or unreadable."""

    name: str
    recipe: Recipe | None = None
    train: TrainResult | None = None
    history: list[TrainLogEntry] = field(default_factory=list)
    quant: QuantResult | None = None
    smoke: SmokeResult | None = None
    state: RunState = field(default_factory=RunState)
    offered: str | None = None  # the file name RunFolder.recommended_gguf gives: the one chat and serve open
    unreadable: list[str] = field(default_factory=list)  # one line per record that exists but could not be read


def records(folder: RunFolder) -> RunRecords:
    """Every record of `folder` that can be read; the others are None, and named in `unreadable` when
    their file exists (another version wrote it, or it is damaged)."""
    offered = folder.recommended_gguf()
    rec = RunRecords(folder.name, history=folder.train_history(), state=folder.state(),
                     offered=offered.name if offered else None)
    for attr, read, path in (("recipe", folder.recipe, folder.recipe_yaml), ("train", folder.train_result, folder.train_json),
                             ("quant", folder.quant_result, folder.quant_json),
                             ("smoke", folder.smoke_result, folder.smoke_json)):
        try:
            setattr(rec, attr, read())
        except EdgetuneError as e:
            if path.exists():
                rec.unreadable.append(str(e))
    return rec


def write(folder: RunFolder, rec: RunRecords | None = None) -> Path:
    """Write report.html into the run folder (atomically) and return its path."""
    write_text(folder.report_html, page(rec or records(folder)))
    return folder.report_html


def open_report(path: Path) -> bool:
    """Open `path` in the system's graphical browser; False where there is none (a terminal over SSH, a
    console-only browser that would take over the terminal): the caller shows the path instead."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if type(browser) is webbrowser.GenericBrowser:  # lynx, w3m, www-browser: they run in this terminal
        return False
    return bool(browser.open(Path(path).resolve().as_uri()))


# ---------------------------------------------------------------- the page


def page(rec: RunRecords) -> str:
    """The whole page."""
    import matplotlib  # lazily: half of the CLI's start-up time otherwise
    body = [f"<h1>edgetune run <code>{_e(rec.name)}</code></h1>", _overview(rec)]
    body += [f'<p class="missing">unreadable: {_e(line)}</p>' for line in rec.unreadable]
    sections = (("Verdicts", _verdicts), ("Training", _training), ("Quantization", _quantization), ("Files", _files),
                ("Answers on held-out prompts", _answers))
    with matplotlib.rc_context(SVG_STYLE):  # figures read the style as they are made
        for title, section in sections:
            try:
                part = section(rec)
            except Exception as e:  # a record of another version with values this one cannot show: say so
                part = f'<p class="missing">could not be shown: {_e(type(e).__name__)}: {_e(e)}</p>'
            body += [f"<h2>{title}</h2>", part]
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>edgetune run {_e(rec.name)}</title>\n<style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + f'\n<footer>edgetune {__version__}, {made}. Rebuild: <code>edgetune report {_e(rec.name)}</code> '
              f"from its runs folder.</footer>\n</body></html>\n")


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.recommended td { background: #fff4e5; font-weight: 600; }
.verdict { padding: .5em .8em; border-radius: 4px; margin: .4em 0; }
.pass { background: #e8f5e9; border-left: 4px solid #2ca02c; }
.fail { background: #fdecea; border-left: 4px solid #d62728; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: .4em .8em; border-radius: 4px; }
.warning { color: #8a6d3b; background: #fcf8e3; padding: .4em .8em; border-left: 4px solid #e0a800; }
.chart svg { max-width: 100%; height: auto; }
td.right { color: #2ca02c; } td.wrong { color: #b02a2a; }
footer { margin-top: 3em; color: #888; font-size: 12px; }
"""


def _overview(rec: RunRecords) -> str:
    items = []
    r, t, s = rec.recipe, rec.train, rec.state
    if r:
        items.append(f"base <code>{_e(r.base)}</code>; data <code>{_e(r.data.path)}</code>")
    if t:
        items.append(f"{t.method} on {t.device} ({t.dtype}), {t.steps} steps in {t.seconds:g} s"
                     + (f" over {t.parts} parts" if t.parts > 1 else "")
                     + f"; trainable {t.trainable_params:,} of {t.total_params:,} parameters; "
                       f"chat template {_e(t.template or 'none')}; {t.train_rows} training rows, {t.eval_rows} held out")
        items.append(f"eval loss {_num(t.eval_loss, '.4f')}, perplexity {_num(t.eval_perplexity, '.3f')}")
    if r:
        tr = r.train
        items.append(f"LoRA r={tr.rank}, alpha={tr.alpha}, targets {_e(tr.targets)}, lr {tr.lr:g}, "
                     f"{tr.scheduler} schedule, batch {tr.batch_size}x{tr.grad_accum}")
    if s.outcome in ("failed", "interrupted"):  # while the pipeline writes the report, the attempt is still running
        items.append(f"last attempt: {_e(s.outcome)}" + (f" in {_e(s.step)}" if s.step else "")
                     + (f": {_e(s.error)}" if s.error else ""))
    missing = [name for name, value in (("recipe.yaml", r), ("train.json", t)) if value is None]
    out = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return out + (_missing(", ".join(missing)) if missing else "")


def _verdicts(rec: RunRecords) -> str:
    if rec.smoke is None:
        return _missing("smoke.json: the smoke test has not run, so there are no verdicts")
    out = []
    for line in verdict_lines(rec.smoke):
        ok = ": PASS" in line or ": good" in line
        out.append(f'<div class="verdict {"pass" if ok else "fail"}">{_e(line)}</div>')
    return "\n".join(out)


# ---------------------------------------------------------------- training curves


def _training(rec: RunRecords) -> str:
    history = rec.history
    if not history:
        return _missing("train_log.jsonl: no logged training steps")
    from matplotlib.figure import Figure

    train = [h for h in history if h.loss is not None]
    evals = [h for h in history if h.eval_loss is not None]
    fig = Figure(figsize=(11, 3.1), layout="constrained")
    loss, lr, speed = fig.subplots(1, 3)
    if train:
        loss.plot([h.step for h in train], [h.loss for h in train], color=TRAIN, marker=".", label="train", gid="train-loss")
    if evals:
        loss.plot([h.step for h in evals], [h.eval_loss for h in evals], color=EVAL, marker="o", label="eval",
                  gid="eval-loss")
    loss.set(title="loss", xlabel="step")
    loss.legend(frameon=False)
    _series(lr, [(h.step, h.learning_rate) for h in train], "learning rate", "learning-rate", ACCENT)
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    _series(speed, [(h.step, h.tokens_per_s) for h in train], "training tokens/s (average since start)",
            "tokens-per-s", GOOD)
    parts = [_chart(fig)]
    if not evals:
        parts.append("<p>No eval loss was logged (no held-out rows, or fewer steps than train.eval_steps).</p>")
    return "\n".join(parts)


def _series(ax, points: list[tuple[int, float | None]], title: str, gid: str, color: str) -> None:
    points = [(x, y) for x, y in points if y is not None]
    ax.set(title=title, xlabel="step")
    if points:
        ax.plot([x for x, _ in points], [y for _, y in points], color=color, marker=".", gid=gid)
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color=MUTED)


# ---------------------------------------------------------------- quantization picture


def chosen(rec: RunRecords) -> QuantFile | None:
    """The quantized file the run offers (RunFolder.recommended_gguf), when it is one of quant.json's:
    by its file name, by its label in records that lack one."""
    if rec.quant is None or rec.offered is None:
        return None
    return next((f for f in rec.quant.files if (f.file or f"{rec.name}-{f.label.upper()}.gguf") == rec.offered), None)


def smoked(rec: RunRecords) -> FileCheck | None:
    """The smoke test's check of the file the run offers."""
    return next((f for f in rec.smoke.files if f.file == rec.offered), None) if rec.smoke is not None else None


def _quantization(rec: RunRecords) -> str:
    quant = rec.quant
    if quant is None:
        return _missing("quant.json: the quantize step has not run")
    parts = []
    if quant.imatrix:
        im = quant.imatrix
        parts.append(f"<p>Importance matrix from {im.tokens:,} training tokens of <code>{_e(im.dataset)}</code>.</p>"
                     if im.path else f"<p>No importance matrix: {_e(im.note)}.</p>")
    parts += [f'<p class="warning">Warning: {_e(note)}.</p>' for note in quant.notes]
    if quant.sweep:
        s = quant.sweep
        parts.append(f'<div class="verdict {"pass" if s.met else "fail"}">auto sweep, budget {_e(s.budget)}: '
                     f"{_e(s.why)}</div>")
    elif quant.files:
        parts.append("<p>Fixed list of types (<code>export.quants</code>): no budget; the recommended file is the "
                     "one the Modelfile uses.</p>")
    measured = [f for f in quant.files if f.measured]
    if not measured:
        return "\n".join(parts + [_missing("no file was measured against the unquantized one (no held-out rows)")])
    parts.append(_chart(_quant_figure(rec, measured, [f for f in quant.files if not f.measured and f.size])))
    parts.append("<p>Each point is a file; ★ the recommended one; hollow grey points miss the budget; shaded: outside "
                 "the budget; grey ticks along the bottom: files of the sweep not measured (their size only). KLD: "
                 "KL(F16 ‖ file) of next-token distributions on the held-out rows; top-1: same most likely token as "
                 "F16.</p>")
    return "\n".join(parts)


def _quant_figure(rec: RunRecords, files: list[QuantFile], unmeasured: list[QuantFile]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    quant = rec.quant
    best = chosen(rec)
    ref = quant.reference
    ref_mib = _reference_mib(rec)
    budget = rec.recipe.export if rec.recipe is not None and quant.sweep is not None else None
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure the files' names with, before they are placed
    axes = fig.subplots(1, 3)
    named = []
    panels = (("kld", "mean KL divergence vs F16 (log)", lambda f: max(f.mean_kld, 1e-6)),
              ("top1", "top-1 agreement with F16", lambda f: f.top1),
              ("accuracy", "held-out accuracy (exact match)", lambda f: f.accuracy))
    for ax, (key, title, value) in zip(axes, panels):
        ax.set(title=title, xlabel="file size (MiB)")
        ax.margins(0.08, 0.1)  # the star and the labels of the extreme files stay inside the panel
        points = [(f, value(f)) for f in files if value(f) is not None]
        inside = [(f, y) for f, y in points if not f.misses]
        outside = [(f, y) for f, y in points if f.misses]
        if inside:
            ax.scatter([f.size / 2**20 for f, _ in inside], [y for _, y in inside], color=TRAIN, s=28, zorder=3,
                       clip_on=False, gid=f"files-{key}")
        if outside:
            ax.scatter([f.size / 2**20 for f, _ in outside], [y for _, y in outside], facecolors="none",
                       edgecolors=MUTED, s=28, zorder=3, clip_on=False, gid=f"files-out-{key}")
        if unmeasured:  # x in MiB, y at the panel's foot: they have a size and nothing else
            ax.plot([f.size / 2**20 for f in unmeasured], [0.03] * len(unmeasured), linestyle="none", marker="|",
                    markersize=9, color=MUTED, transform=ax.get_xaxis_transform(), label="not measured",
                    gid=f"files-unmeasured-{key}")
        if best is not None and value(best) is not None:
            ax.scatter([best.size / 2**20], [value(best)], marker="*", s=220, color=ACCENT, edgecolors="#7a3d00",
                       zorder=4, clip_on=False, label=f"recommended: {best.label}", gid=f"recommended-{key}")
        if key == "kld":
            ax.set_yscale("log")
        elif key == "top1":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            if ref_mib is not None:
                ax.scatter([ref_mib], [1.0], marker="s", color="black", s=24, zorder=3, label=f"{ref.file}")
        else:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            if ref is not None and ref.accuracy is not None and ref_mib is not None:
                ax.scatter([ref_mib], [ref.accuracy], marker="s", color="black", s=24, zorder=3, label=f"{ref.file}")
            if quant.base is not None and quant.base.accuracy is not None:
                ax.axhline(quant.base.accuracy, color=MUTED, linestyle=":", linewidth=1, label="base model")
        if budget is not None:
            _draw_budget(ax, key, budget, ref)
        if key != "kld":  # shares: no room below 0% or above 100%
            y0, y1 = ax.get_ylim()
            ax.set_ylim(max(y0, -0.03), min(y1, 1.03))
        named.append((ax, key, points))
        ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    fig.draw_without_rendering()  # the layout, so that the points are where the SVG will have them
    for ax, key, points in named:
        _label(ax, key, points, best)
    return fig


def _label(ax, key: str, points: list[tuple[QuantFile, float]], best: QuantFile | None) -> None:
    """The files' names beside their points: each in the first place around its point (right, left, above,
    below) that is inside the panel and clear of every point and of the names placed before it."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    pt = ax.figure.dpi / 72
    taken = []
    for c in ax.collections:  # the scatters' markers: the files, the star, the F16 square
        r = (max(c.get_sizes(), default=36) ** 0.5 / 2 + 1) * pt
        taken += [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in ax.transData.transform(c.get_offsets())]
    for i, ((mib, y), labels) in enumerate(_coinciding(points).items()):
        d = 9 if best is not None and best.label in labels else 5  # clear of the star, or of a dot
        text = ax.annotate("\n".join(labels), (mib, y), xytext=(d, 0), textcoords="offset points", fontsize=LABEL_PT,
                           color="#444", gid=f"label-{key}-{i}")
        places = ((d, 0, "left", "center"), (-d, 0, "right", "center"), (d - 3, d - 3, "left", "bottom"),
                  (d - 3, 3 - d, "left", "top"), (3 - d, d - 3, "right", "bottom"), (3 - d, 3 - d, "right", "top"),
                  (0, d, "center", "bottom"), (0, -d, "center", "top"))
        fits = []  # (place, clear of the others)
        for dx, dy, ha, va in places:
            text.xyann = (dx, dy)
            text.set(ha=ha, va=va)
            box = text.get_window_extent(renderer)
            if ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1):
                fits.append(((dx, dy, ha, va), not any(box.overlaps(t) for t in taken)))
        # the first clear place inside the panel; else the first inside it; else to the right, as most are
        dx, dy, ha, va = next((p for p, clear in fits if clear), fits[0][0] if fits else places[0])
        text.xyann = (dx, dy)
        text.set(ha=ha, va=va)
        taken.append(text.get_window_extent(renderer))


def _coinciding(points: list[tuple[QuantFile, float]]) -> dict[tuple[float, float], list[str]]:
    """The files' labels by point, files drawn on the same spot together (a small model's types often fall
    back to one and the same file): one label each, their names stacked, not printed over each other."""
    spots: dict[tuple[float, float], list[str]] = {}
    for f, y in sorted(points, key=lambda p: p[0].size):
        spot = next((s for s in spots if abs(s[0] - f.size / 2**20) < 0.005 and abs(s[1] - y) <= 1e-3 * abs(y)),
                    (f.size / 2**20, y))
        spots.setdefault(spot, []).append(f.label)
    return spots


def _draw_budget(ax, key: str, budget, ref) -> None:
    """The auto sweep's limits on this panel: a line each, the side outside the budget shaded."""
    style = dict(color=EVAL, linestyle="--", linewidth=1)
    shade = dict(color=EVAL, alpha=0.06, linewidth=0)
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    if budget.auto_max_mib:  # on every panel: the F16 point lies beyond it on two of them
        if budget.auto_max_mib * 1.05 > x1:  # the limit beyond the files: room on both sides
            x1 = budget.auto_max_mib * 1.08
            x0 -= 0.04 * (x1 - x0)
        ax.axvline(budget.auto_max_mib, label=f"budget: <= {budget.auto_max_mib:g} MiB", gid=f"budget-mib-{key}", **style)
        ax.axvspan(budget.auto_max_mib, x1, **shade)
    floor = None
    if key == "top1":
        floor, label, gid = budget.auto_min_top1, f"budget: top-1 >= {budget.auto_min_top1:.0%}", "budget-top1"
    elif key == "accuracy" and ref is not None and ref.accuracy is not None:
        floor = ref.accuracy - budget.auto_max_accuracy_drop
        floor = floor if floor > 0 else None  # no accuracy below 0: no limit to draw
        label, gid = f"budget: accuracy >= F16's - {budget.auto_max_accuracy_drop:.0%}", "budget-accuracy"
    if floor is not None:
        if floor < y0 or floor > y1:  # the limit beyond the files: room on both sides
            lo, hi = min(y0, floor), max(y1, floor)
            y0, y1 = lo - 0.06 * (hi - lo), hi + 0.06 * (hi - lo)
        ax.axhline(floor, label=label, gid=gid, **style)
        ax.axhspan(y0, floor, **shade)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _reference_mib(rec: RunRecords) -> float | None:
    """The unquantized file's size, from the smoke test's check of it."""
    ref = rec.quant.reference if rec.quant else None
    if ref is None or rec.smoke is None:
        return None
    return next((f.bytes / 2**20 for f in rec.smoke.files if f.file == ref.file), None)


# ---------------------------------------------------------------- tables


def _files(rec: RunRecords) -> str:
    parts = []
    quant, smoke = rec.quant, rec.smoke
    if quant is not None and quant.files:
        best = chosen(rec)
        rows = []
        for f in quant.files:
            mark = "★ " if f is best else ""
            if not f.measured:
                rows.append([f.label, f"~{f.size / 2**20:.2f}", "", "", "", "", "", "", f.status])
                continue
            rows.append([mark + f.label, f"{f.size / 2**20:.2f}", _num(f.bits_per_weight, ".2f"), f"{f.mean_kld:.4f}",
                         _num(f.p99_kld, ".4f"), _pct(f.top1), _num(f.delta_ppl, "+.3f"), _pct(f.accuracy),
                         ("recommended" if f is best else f.status) + ("" if f.kept else " (deleted)")])
        parts.append("<h3>Quantized files against the unquantized one</h3>" + _table(
            ["file", "MiB", "bits/w", "mean KLD", "p99 KLD", "top-1", "Δppl", "accuracy", "status"], rows,
            highlight=[i for i, f in enumerate(quant.files) if f is best]))
    if smoke is not None:
        rows = [[f.file, f"{f.bytes / 2**20:.2f}", f"{f.bits_per_weight:.2f}", f"{f.perplexity:.3f}", f"{f.nmse:.2e}",
                 _pct(f.agreement), _pct(f.accuracy), f"{f.stopped_at_eos}/{len(f.answers)}", f.chat_path,
                 f"{f.prompt_tokens_per_s or 0:.0f}", f"{f.gen_tokens_per_s or 0:.0f}",
                 "pass" if f.passed else "FAIL: " + "; ".join(f.problems)] for f in smoke.files]
        parts.append(f"<h3>Smoke test: every file in llama.cpp against the merged model (HF perplexity "
                     f"{_num(smoke.hf.perplexity, '.3f')})</h3>" + _table(
                         ["file", "MiB", "bits/w", "perplexity", "logits NMSE", "agree HF", "accuracy", "stops at EOS",
                          "chat path", "prompt tok/s", "gen tok/s", "file verdict"], rows))
    else:
        parts.append(_missing("smoke.json: no smoke test of the files"))
    return "\n".join(parts)


def _answers(rec: RunRecords) -> str:
    smoke = rec.smoke
    if smoke is None:
        return _missing("smoke.json: no answers")
    if not smoke.prompts:
        return "<p>No held-out prompts.</p>"
    gguf = smoked(rec) or (smoke.files[-1] if smoke.files else None)
    columns = [("base", smoke.base.answers), ("fine-tuned (HF)", smoke.hf.answers)]
    if gguf is not None:
        columns.append((gguf.file, gguf.answers))
    head = "".join(f"<th>{_e(h)}</th>" for h in ["prompt", "expected"] + [c for c, _ in columns])
    rows = []
    for i, (prompt, expected) in enumerate(zip(smoke.prompts, smoke.expected)):
        cells = [f"<td>{_e(prompt)}</td>", f"<td>{_e(expected)}</td>"]
        for _, answers in columns:
            answer = answers[i] if i < len(answers) else ""
            right = answer.strip() == expected.strip()
            cells.append(f'<td class="{"right" if right else "wrong"}">{_e(answer) or "<em>(nothing)</em>"}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="answers"><tr>{head}</tr>' + "".join(rows) + "</table>"
            f"<p>Exact match: base {_pct(smoke.base.accuracy)}, fine-tuned {_pct(smoke.hf.accuracy)}"
            + (f", {_e(gguf.file)} {_pct(gguf.accuracy)}" if gguf else "") + ".</p>")


def _table(head: list[str], rows: list[list[str]], highlight: list[int] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="recommended"' if i in highlight else ""
        cells = "".join(f'<td{" class=num" if _numeric(c) else ""}>{_e(c)}</td>' for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</table>"


# ---------------------------------------------------------------- helpers


def _chart(fig: Figure) -> str:
    """The figure as inline SVG (text kept as text; no date, stable ids)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return f'<div class="chart">{svg[svg.index("<svg"):]}</div>'


def _missing(what: str) -> str:
    return f'<p class="missing">missing: {_e(what)}</p>'


def _e(text) -> str:
    return html.escape(str(text))


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _numeric(text: str) -> bool:
    return bool(text) and text.lstrip("~+-").replace(".", "", 1).replace("%", "").replace("e-", "").replace("e+", "").isdigit()


__all__ = ["RunRecords", "chosen", "open_report", "page", "records", "smoked", "write"]
