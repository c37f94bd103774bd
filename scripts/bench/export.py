"""The road from adapter to tested file: seconds in each step after training, against training itself.

One `edgetune run` (a child process) of Gemma 3 270M (or the demo) on 240 rows of our own task, a fixed
step count, `quants: [Q8_0, Q4_K_M]`; then the seconds of train, merge, convert, quantize (importance
matrix, files, measurements) and smoke from the run's own records, and the ratio of the steps after
training to training. The figures the report gives (perplexities, accuracy, KLD, task verdict) are
printed too, so a faster road can be checked to report the same.

    .venv/bin/python -m scripts.bench.export --base gemma3-270m --steps 24
    .venv/bin/python -m scripts.bench.export --base demo --steps 24
    .venv/bin/python -m scripts.bench.export --baseline ../old-checkout   # both, the baseline first
    .venv/bin/python -m scripts.bench.export --busy   # one CPU-bound process beside the runs (a user's machine)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from scripts.bench.contention import busy_loop
from scripts.bench.harness import child
from scripts.bench.train import make_data

AFTER = ("merge", "convert", "quantize", "smoke")


def run_once(work: Path, base: str, steps: int, rows: int, code: Path | None, reuse: bool = False) -> float:
    """One `edgetune run` in a child (of the edgetune at `code`, else this one); prints its record and
    returns the ratio of the steps after training to training. With `reuse`, a finished run already in
    `work` is read instead (said in the output)."""
    from edgetune import RunFolder

    folder = RunFolder(work / "runs" / "export")
    if reuse and folder.state().outcome == "done" or (reuse and folder.smoke_json.is_file()):
        print(f"{code or 'this checkout'}: reusing the finished run in {folder.dir} "
              f"(state.json of {time.strftime('%Y-%m-%d %H:%M', time.gmtime(folder.state_json.stat().st_mtime))} UTC)")
        return report(folder, base, steps, rows, code, None)
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work / "task.jsonl", rows)
    recipe = {"name": "export", "base": base, "runs_dir": str(work / "runs"),
              "data": {"path": str(data), "max_length": 256, "eval_split": 0.1},
              "train": {"max_steps": steps, "batch_size": 8, "grad_accum": 2, "lr": 2e-3,
                        "save_steps": 10_000, "eval_steps": 10_000},
              "export": {"quants": ["Q8_0", "Q4_K_M"]}}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"PYTHONPATH": str(code)} if code else None  # the checkout needs edgetune/convert, edgetune/tui links
    # From the run's folder: `-m` puts the working directory first on sys.path, which must not be this checkout.
    run = child([sys.executable, "-m", "edgetune", "run", "--recipe", str(work / "recipe.yaml"), "--force"], env=env,
                cwd=str(work))
    return report(folder, base, steps, rows, code, run)


def report(folder, base: str, steps: int, rows: int, code: Path | None, run) -> float:
    steps_done = folder.state().steps
    quant, smoke = folder.quant_result(), folder.smoke_result()
    seconds = {name: steps_done[name].seconds for name in ("train", *AFTER)}
    print(f"{code or 'this checkout'}: edgetune run on {base}, {steps} steps, {rows} rows, quants Q8_0 + Q4_K_M"
          + (f" (wall {run.seconds:.0f} s, peak RSS {run.peak_rss_mib:.0f} MiB)" if run else ""))
    for name, s in seconds.items():
        print(f"  {name:<9}{s:8.1f} s")
    if quant.seconds:
        print("  quantize: " + ", ".join(f"{k} {v:.1f} s" for k, v in quant.seconds.items()))
    if smoke.seconds:
        print("  smoke:    " + ", ".join(f"{k} {v:.1f} s" for k, v in smoke.seconds.items()))
    ref, base_fig = quant.reference, quant.base
    print(f"  figures: F16 ppl {ref.perplexity:.3f} acc {ref.accuracy}, base ppl {base_fig.perplexity:.3f} "
          f"acc {base_fig.accuracy} ({ref.rows} rows, {ref.positions} positions)")
    for f in quant.files:
        print(f"  {f.label}: {f.size / 2**20:.1f} MiB, KLD {f.mean_kld:.4f}, top-1 {f.top1:.1%}, "
              f"ppl {f.perplexity:.3f}, acc {f.accuracy}")
    for f in smoke.files:
        print(f"  smoke {f.file}: {'PASS' if f.passed else 'FAIL'}, ppl {f.perplexity:.3f} (HF {f.hf_perplexity:.3f}), "
              f"nmse {f.nmse:.2e}, acc {f.accuracy:.0%}, {f.gen_tokens_per_s or 0:.0f} tok/s")
    if smoke.task:
        print(f"  task verdict: {smoke.task.verdict} (accuracy {smoke.task.accuracy}, ppl {smoke.task.perplexity})")
    after = sum(seconds[s] for s in AFTER)
    ratio = after / seconds["train"]
    print(f"  after-training/training: {ratio:.2f}x ({after:.0f} s / {seconds['train']:.0f} s)", flush=True)
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="gemma3-270m")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--baseline", type=Path, help="a checkout of another edgetune, run first in the same way")
    ap.add_argument("--keep", help="folder for the runs (default: a temp folder)")
    ap.add_argument("--reuse-baseline", action="store_true", help="read a finished baseline run in --keep")
    ap.add_argument("--busy", action="store_true", help="one CPU-bound process runs beside every run")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="edgetune-bench-export-"))
    ratios = {}
    busy = busy_loop() if args.busy else None
    if busy is not None:
        print(f"a busy loop (pid {busy.pid}) runs beside every run", flush=True)
    try:
        if args.baseline:
            ratios["baseline"] = run_once(work / "baseline", args.base, args.steps, args.rows,
                                          args.baseline.resolve(), args.reuse_baseline)
        ratios["ours"] = run_once(work / "ours", args.base, args.steps, args.rows, None)
    finally:  # the busy loop never outlives the bench
        if busy is not None:
            busy.kill()
    if args.baseline:
        print(f"ratio after-training/training: baseline {ratios['baseline']:.2f}x, ours {ratios['ours']:.2f}x")
    else:
        print(f"ratio after-training/training: {ratios['ours']:.2f}x")


if __name__ == "__main__":
    main()
