"""Quality and speed per quant type: perplexity of HF vs GGUF F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0
on held-out text, file size, bits per weight, and llama.cpp CPU tokens/s (prompt and generation)
at 1 and 2 threads. The baseline is the HF model (perplexity) and the F16 file (speed), measured
in the same run.

    .venv/bin/python -m scripts.bench.quality --quick                # the demo base
    .venv/bin/python -m scripts.bench.quality --model gemma3-270m    # Gemma 3 270M
    .venv/bin/python -m scripts.bench.quality --model runs/demo/merged
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

QUANTS = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]


def held_out_text(model: str) -> str:
    """Offline English prose: the demo corpus for demo models, stdlib docstrings otherwise."""
    if "demo" in model:
        from edgetune import corpus
        return " ".join(corpus(300, seed=99))
    import argparse as a  # noqa: E401
    import collections
    import json as j
    import logging
    import textwrap
    import unittest
    return "\n\n".join(m.__doc__ or "" for m in (a, collections, j, logging, textwrap, unittest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=None, help="held-out tokens to score")
    a = ap.parse_args()
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune import bits_per_weight, logits_perplexity, quantize, resolve_base
    from edgetune.convert import convert_hf_to_gguf

    spec = a.model or ("demo" if a.quick else "gemma3-270m")
    model_dir = resolve_base(spec)
    n_tokens = a.tokens or (256 if a.quick else 512)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(held_out_text(spec), add_special_tokens=True)["input_ids"][:n_tokens]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf_ppl = logits_perplexity([hf(torch.tensor([ids])).logits[0].numpy()], [ids])
    del hf
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        f16 = Path(tmp) / "model-F16.gguf"
        convert_hf_to_gguf(model_dir, f16, "f16")
        for q in QUANTS:
            path = f16 if q == "F16" else Path(quantize.quantize(f16, Path(tmp) / f"model-{q}.gguf", q)["path"])
            row = {"type": q, "mib": path.stat().st_size / 2**20, "bpw": bits_per_weight(path)}
            for threads in (1, 2):
                llm = Llama(model_path=str(path), n_ctx=len(ids) + 80, logits_all=True, verbose=False,
                            n_threads=threads, n_batch=512)
                t0 = time.perf_counter()
                llm.eval(ids)
                row[f"pp{threads}"] = len(ids) / (time.perf_counter() - t0)
                if threads == 1:
                    row["ppl"] = logits_perplexity([np.array(llm.scores[: len(ids)])], [ids])
                llm.reset()
                t0 = time.perf_counter()
                out = llm.create_completion(ids[:16], max_tokens=64, temperature=0.0, top_k=1)
                row[f"tg{threads}"] = out["usage"]["completion_tokens"] / (time.perf_counter() - t0)
                del llm
            rows.append(row)
    base = rows[0]
    print(f"model {spec}: {len(ids)} held-out tokens, HF fp32 perplexity {hf_ppl:.4f}; "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'type':8}{'MiB':>8}{'bpw':>6}{'ppl':>9}{'ppl/HF':>8}{'pp t1':>8}{'pp t2':>8}{'tg t1':>8}{'tg t2':>8}"
          f"{'tg2/F16':>9}")
    for r in rows:
        print(f"{r['type']:8}{r['mib']:>8.1f}{r['bpw']:>6.2f}{r['ppl']:>9.4f}{r['ppl'] / hf_ppl:>8.4f}"
              f"{r['pp1']:>8.0f}{r['pp2']:>8.0f}{r['tg1']:>8.1f}{r['tg2']:>8.1f}{r['tg2'] / base['tg2']:>9.2f}")


if __name__ == "__main__":
    main()
