"""GPU check: QLoRA on CUDA end to end, in one short run (< 8 minutes), printing one table.

Runs the pipeline on the offline demo base with method qlora (NF4 + double quant, bf16 compute,
paged AdamW 32-bit, gradient checkpointing), reports trained tokens/s and
torch.cuda.max_memory_allocated, then merges, converts, quantizes and smoke-tests when the GGUF
stack (gguf, llama-cpp-python) is importable there. Needs no network.

Then QLoRA peak memory against the seed recipe (scripts/bench/train.py's train_seed: TRL SFTTrainer,
padding, no packing, full-vocabulary logits, loss on every token) on the same model, rows and steps,
each in a fresh process: a model of Gemma 3 270M's shape (262,144-token vocabulary, where the logits
are the peak of memory) with random weights and the demo tokenizer, since the real weights cannot
be fetched there. Memory does not depend on the weights' values. Target: edgetune <= 0.5x.

    python scripts/gpu_check.py [--steps 60] [--memory-steps 10] [--out /tmp/gpu_check]

On the lent device machine, packages missing from its image (trl, bitsandbytes, peft, gguf,
llama-cpp-python) travel as wheels (see the device tool's README) and are put on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script on the device machine: edgetune and scripts.bench from this checkout

# Gemma 3 270M's text config (from the model's config.json): 18 layers, hidden 640, vocabulary 262,144.
GEMMA3_270M = dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                   num_key_value_heads=1, head_dim=256, vocab_size=262144, max_position_embeddings=32768,
                   query_pre_attn_scalar=256, sliding_window=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                   hidden_activation="gelu_pytorch_tanh")
MEMORY_BATCH, MEMORY_MAX_LENGTH = 8, 512


def gemma_shaped_base(out: Path) -> Path:
    """A Gemma 3 270M-shaped model (random weights, bf16) with the demo base's tokenizer, as a local HF
    folder edgetune and TRL both load."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from edgetune import build_demo_base

    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(build_demo_base())
    config = Gemma3TextConfig(**GEMMA3_270M, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def memory_run(kind: str, base: str, data: str, steps: int, out: str) -> dict:
    """One side of the comparison in this (fresh) process: QLoRA training, then its peak CUDA memory
    (without CUDA, as in the test that runs this path on the CPU: the process's peak RSS)."""
    import torch

    from edgetune import load_tokenizer, train
    from scripts.bench import train as bench  # the benchmark's recipe and the seed recipe
    from scripts.bench.harness import peak_rss_mib

    r = bench.bench_recipe(kind, base, data, steps, out, batch=MEMORY_BATCH, max_length=MEMORY_MAX_LENGTH,
                           dtype="bf16")
    r.train.method, r.train.gradient_checkpointing = "qlora", "true"
    p = train.plan(r.train)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    if kind == "ours":
        train.train(r, Path(out) / kind)
        log = [json.loads(x) for x in (Path(out) / kind / "train_log.jsonl").read_text().splitlines()]
        tokens = max(x.get("num_tokens", 0) for x in log)
    else:
        _, _, tokens, _ = bench.train_seed(r, load_tokenizer(base), Path(out) / kind, p, checkpointing=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    return {"kind": kind, "peak_mib": peak, "tokens": tokens,
            "seconds": time.time() - t0, "method": p.method, "dtype": p.dtype}


def memory_comparison(out: Path, steps: int, base: Path | None = None) -> list[tuple[str, str]]:
    """Rows for the table: each side's peak memory and the ratio, or why a side failed. `base`: the
    Gemma-shaped model by default (a test passes a tiny one)."""
    from scripts.bench import train as bench

    out.mkdir(parents=True, exist_ok=True)
    base = base or gemma_shaped_base(out / "gemma3-270m-shaped")
    data = bench.make_data(out / "memory.jsonl", 400)
    result = {}
    for kind in ("seed", "ours"):
        proc = subprocess.run([sys.executable, __file__, "--_memory", kind, str(base), str(data), str(steps),
                               str(out / "memory")], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], flush=True)
            return [(f"QLoRA peak memory, {kind}", f"FAILED (exit {proc.returncode})")]
        result[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"memory {kind}: {json.dumps(result[kind])}", flush=True)
    seed, ours = result["seed"], result["ours"]
    ratio = ours["peak_mib"] / seed["peak_mib"]
    shape = f"{Path(base).name}, batch {MEMORY_BATCH}, max_length {MEMORY_MAX_LENGTH}, {steps} steps"
    return [("QLoRA peak memory, seed recipe", f"{seed['peak_mib']:.0f} MiB ({shape})"),
            ("QLoRA peak memory, edgetune", f"{ours['peak_mib']:.0f} MiB"),
            ("peak memory ratio ours/seed", f"{ratio:.2f}x ({'meets' if ratio <= 0.5 else 'misses'} target <= 0.5x)")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--memory-steps", type=int, default=10, help="steps of each side of the memory comparison")
    ap.add_argument("--out", default="/tmp/gpu_check")
    ap.add_argument("--_memory", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._memory:
        kind, base, data, steps, out = a._memory
        print(json.dumps(memory_run(kind, base, data, int(steps), out)))
        return

    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device; this check is for a GPU machine")
    from edgetune import Event, RunFolder, TrainMetrics, pipeline
    from edgetune import recipe as R

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
    summary = None
    try:
        summary = pipeline.run(r, on_event, until=until, force=True)
    finally:
        folder = RunFolder.of(r)
        train = folder.optional(folder.train_result)
        rows = [("device", torch.cuda.get_device_name(0)), ("torch", torch.__version__),
                ("method", f"{train.method} {train.dtype}" if train else "-"), ("steps", train.steps if train else "-"),
                ("train tokens/s (last)", f"{rates[-1]:.0f}" if rates else "-"),
                ("max_memory_allocated", f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"),
                ("eval loss", f"{train.eval_loss:.4f}" if train and train.eval_loss is not None else "-"),
                ("total seconds", f"{time.time() - t_all:.0f}")]
        for f in summary.files if summary else []:
            rows.append((f.file, f"{'pass' if f.passed else 'FAIL'} ppl {f.perplexity:.3f} "
                         f"nmse {f.nmse:.1e} acc {f.accuracy:.0%} {f.gen_tokens_per_s or 0:.0f} tok/s"))
        try:
            rows += memory_comparison(Path(a.out) / "memory-check", a.memory_steps)
        except Exception as e:  # the pipeline's rows above still print
            rows.append(("QLoRA peak memory", f"FAILED: {type(e).__name__}: {e}"))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
