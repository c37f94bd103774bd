"""GPU check: QLoRA on CUDA end to end, in one short run (< 8 minutes), printing one table.

Runs the pipeline on the offline demo base with method qlora (NF4 + double quant, bf16 compute,
paged AdamW 32-bit, gradient checkpointing), reports trained tokens/s and
torch.cuda.max_memory_allocated, then merges, converts, quantizes and smoke-tests when the GGUF
stack (gguf, llama-cpp-python) is importable there. Needs no network.

    python scripts/gpu_check.py [--steps 60] [--out /tmp/gpu_check]

On the lent device machine, packages missing from its image (trl, bitsandbytes, peft, gguf,
llama-cpp-python) travel as wheels (see the device tool's README) and are put on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="/tmp/gpu_check")
    a = ap.parse_args()

    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; this check is for a GPU machine")
    from edgetune import pipeline
    from edgetune import recipe as R
    from edgetune.events import Event, TrainMetrics

    t_all = time.time()
    r = R.load(Path(__file__).resolve().parent.parent / "recipes" / "demo.yaml")
    r.name, r.runs_dir = "gpu-check", a.out
    r.train.method, r.train.dtype, r.train.max_steps = "qlora", "bf16", a.steps
    r.train.gradient_checkpointing = "true"
    rates = []

    def on_event(e: Event) -> None:
        if isinstance(e, TrainMetrics) and e.tokens_per_s:
            rates.append(e.tokens_per_s)
        if e.kind in ("log", "metric", "done") and e.message:
            print(f"[{e.phase}] {e.message}", flush=True)

    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
        until = "smoke"
    except ImportError:
        until = "merge"
        print("gguf/llama-cpp-python missing: stopping after merge", flush=True)
    summary = {}
    try:
        summary = pipeline.run(r, on_event, until=until, force=True)
    finally:
        train = json.loads((Path(a.out) / r.name / "train.json").read_text()) if \
            (Path(a.out) / r.name / "train.json").exists() else {}
        rows = [("device", torch.cuda.get_device_name(0)), ("torch", torch.__version__),
                ("method", f"{train.get('method')} {train.get('dtype')}"), ("steps", train.get("steps")),
                ("train tokens/s (last)", f"{rates[-1]:.0f}" if rates else "-"),
                ("max_memory_allocated", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"),
                ("eval loss", f"{train.get('eval_loss', float('nan')):.4f}"),
                ("total seconds", f"{time.time() - t_all:.0f}")]
        for f in (summary or {}).get("files", []):
            rows.append((f["file"], f"{'pass' if f['passed'] else 'FAIL'} ppl {f['perplexity']:.3f} "
                         f"nmse {f['nmse']:.1e} acc {f['accuracy']:.0%} {f['gen_tokens_per_s'] or 0:.0f} tok/s"))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
