"""The road from adapter to tested file: seconds in each step after training, against training itself.

One `edgetune run` (a child process) of Gemma 3 270M (or the demo) on 240 rows of our own task, a fixed
step count, `quants: [Q8_0, Q4_K_M]`; then the seconds of train, merge, convert, quantize (importance
matrix, files, measurements) and smoke from the run's own records, and the ratio of the steps after
training to training. The figures the report gives (perplexities, accuracy, KLD, task verdict) are
printed too, so a faster road can be checked to report the same.

    .venv/bin/python -m scripts.bench.export --base gemma3-270m --steps 24
    .venv/bin/python -m scripts.bench.export --base demo --steps 24
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from scripts.bench.harness import child
from scripts.bench.train import make_data

AFTER = ("merge", "convert", "quantize", "smoke")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="gemma3-270m")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--keep", help="run folder parent to keep (default: a temp folder)")
    args = ap.parse_args()

    from edgetune.runs import RunFolder

    work = Path(args.keep or tempfile.mkdtemp(prefix="edgetune-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work / "task.jsonl", args.rows)
    recipe = {"name": "export", "base": args.base, "runs_dir": str(work / "runs"),
              "data": {"path": str(data), "max_length": 256, "eval_split": 0.1},
              "train": {"max_steps": args.steps, "batch_size": 8, "grad_accum": 2, "lr": 2e-3,
                        "save_steps": 10_000, "eval_steps": 10_000},
              "export": {"quants": ["Q8_0", "Q4_K_M"]}}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    import sys
    run = child([sys.executable, "-m", "edgetune", "run", "--recipe", str(work / "recipe.yaml"), "--force"])

    folder = RunFolder(work / "runs", "export")
    steps = folder.state().steps
    quant, smoke = folder.quant_result(), folder.smoke_result()
    seconds = {name: steps[name].seconds for name in ("train", *AFTER)}
    print(f"edgetune run on {args.base}, {args.steps} steps, {args.rows} rows, quants Q8_0 + Q4_K_M "
          f"(wall {run.seconds:.0f} s, peak RSS {run.peak_rss_mib:.0f} MiB)")
    for name, s in seconds.items():
        print(f"  {name:<9}{s:8.1f} s")
    parts = dict(quant.seconds)
    if parts:
        print("  quantize: " + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    if smoke.seconds:
        print("  smoke:    " + ", ".join(f"{k} {v:.1f} s" for k, v in smoke.seconds.items()))
    ref, base = quant.reference, quant.base
    print(f"figures: F16 ppl {ref.perplexity:.3f} acc {ref.accuracy}, base ppl {base.perplexity:.3f} "
          f"acc {base.accuracy}")
    for f in quant.files:
        print(f"  {f.label}: {f.size / 2**20:.1f} MiB, KLD {f.mean_kld:.4f}, top-1 {f.top1:.1%}, "
              f"ppl {f.perplexity:.3f}, acc {f.accuracy}")
    for f in smoke.files:
        print(f"  smoke {f.file}: {'PASS' if f.passed else 'FAIL'}, ppl {f.perplexity:.3f} (HF {f.hf_perplexity:.3f}), "
              f"nmse {f.nmse:.2e}, acc {f.accuracy:.0%}, {f.gen_tokens_per_s or 0:.0f} tok/s")
    if smoke.task:
        print(f"  task verdict: {smoke.task.verdict} (accuracy {smoke.task.accuracy}, ppl {smoke.task.perplexity})")
    after = sum(seconds[s] for s in AFTER)
    print(f"ratio after-training/training: {after / seconds['train']:.2f}x ({after:.0f} s / {seconds['train']:.0f} s)")


if __name__ == "__main__":
    main()
