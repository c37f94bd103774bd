"""Mixed quant types per tensor vs llama.cpp's single file types at the same size: mean KL divergence and
top-1 agreement with the F16 file on an evaluation text, both sides measured by llama.cpp in one run.

For each single type (default embedding type, llama.cpp's own mix of upgrades), the mix gets a byte budget
equal to that file's size: edgetune.mixed scores every tensor at every ladder type (imatrix-weighted relative
error), chooses per-tensor types under the budget (the token embedding included) and writes them through
tt_overrides; a second mix scales each tensor's error by its kind's measured KLD sensitivity
(edgetune.mixed.calibrate, probed on rows of the calibration text, not the evaluation text). All use the
same importance matrix (calibration text: stdlib docstrings, as in
scripts/bench/quant.py); the evaluation text is other modules' docstrings, never seen by the imatrix.

    .venv/bin/python -m scripts.bench.mixed                  # Gemma 3 270M (cached HF import)
    .venv/bin/python -m scripts.bench.mixed --model demo     # the demo base, seconds
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from edgetune import LADDER
from scripts.bench.quant import CALIBRATION_MODULES, EVALUATION_MODULES, docstrings, rows_of  # the same texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--types", default="Q3_K_M,Q4_K_M,Q5_K_M", help="single file types to match in size")
    ap.add_argument("--ladder", default=",".join(LADDER))
    ap.add_argument("--calibration-tokens", type=int, default=16384)
    ap.add_argument("--eval-tokens", type=int, default=1024)
    ap.add_argument("--probe-tokens", type=int, default=512, help="calibration-text tokens the KLD probes read")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    from transformers import AutoTokenizer

    from edgetune import Heldout, kld, mixed, quantize, resolve_base
    from edgetune import imatrix as imatrix_mod
    from edgetune.convert import convert_hf_to_gguf

    model_dir = resolve_base(a.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    calib = rows_of(tok, docstrings(CALIBRATION_MODULES), a.calibration_tokens, a.width)
    evals = rows_of(tok, docstrings(EVALUATION_MODULES), a.eval_tokens, a.width)
    held = Heldout(evals, [[1] * len(r) for r in evals])
    probe_rows = calib[: max(1, a.probe_tokens // a.width)]
    probes = Heldout(probe_rows, [[1] * len(r) for r in probe_rows])
    print(f"model {a.model}: calibration {sum(map(len, calib))} tokens, evaluation {sum(map(len, evals))} tokens "
          f"of other text; ladder {a.ladder}; {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f16 = convert_hf_to_gguf(model_dir, tmp / "m-F16.gguf", "f16")
        im = imatrix_mod.write(imatrix_mod.compute(model_dir, calib, "stdlib-docstrings"), tmp / "m.imatrix.gguf")
        ref = kld.reference(f16, held, max_tokens=1, threads=a.threads)
        t0 = time.perf_counter()
        table = mixed.error_table(f16, im, tuple(a.ladder.split(",")), a.threads)
        table_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe_ref = kld.reference(f16, probes, max_tokens=1, threads=a.threads)
        calibrated = mixed.calibrate(table, f16, im, probe_ref, probes, a.threads)
        del probe_ref
        calib_s = time.perf_counter() - t0
        for q in a.types.split(","):
            single = tmp / f"m-{q}.gguf"
            quantize.quantize(f16, single, q, a.threads, imatrix=im)
            size = single.stat().st_size
            types = mixed.written_types(single)
            known = {n: types[n] for n in table.options if any(o.type == types[n] for o in table.options[n])}
            single_err = table.error(known) if len(known) == len(table.options) else float("nan")
            s = kld.measure(single, ref, held, max_tokens=1, threads=a.threads)
            single.unlink()
            mixes = []
            for t in (table, calibrated):
                plan = mixed.choose(t, size)
                mix = tmp / f"m-{q}-mixed.gguf"
                mixed.quantize_mix(f16, mix, plan, im, a.threads)
                mixes.append((plan, kld.measure(mix, ref, held, max_tokens=1, threads=a.threads), mix.stat().st_size))
                mix.unlink()
            rows.append((q, size, s, single_err, types.get("token_embd.weight"), mixes))

    print(f"\nerror table: {len(table.options)} tensors x {len(a.ladder.split(','))} types in {table_s:.0f}s; "
          f"fallbacks: " + ", ".join(f"{r}->{sorted(set(fb.values()))} ({len(fb)} tensors)" for r, fb in table.fallbacks.items()))
    print(f"KLD probes (calibrate): {calib_s:.0f}s; KLD per unit relative error: "
          + ", ".join(f"{k.removesuffix('.weight')} {v:.3g}" for k, v in calibrated.sensitivity.items()))
    print(f"\n{'single':8}{'MiB':>7}{'KLD':>8}{'top-1':>7}{'emb':>6} | {'mix (relative error)':22}{'KLD':>8}{'top-1':>7}"
          f"{'emb':>6}{'ratio':>7} | {'mix (KLD-calibrated)':22}{'KLD':>8}{'top-1':>7}{'emb':>6}{'ratio':>7}")
    for q, size, s, single_err, emb, mixes in rows:
        line = f"{q:8}{size / 2**20:7.2f}{s.mean_kld:8.4f}{s.top1:7.1%}{emb:>6}"
        for plan, m, mix_bytes in mixes:
            line += (f" | {mix_bytes / 2**20:7.2f} MiB{'':11}{m.mean_kld:8.4f}{m.top1:7.1%}"
                     f"{plan.types.get('token_embd.weight', '-'):>6}{m.mean_kld / s.mean_kld:6.2f}x")
        print(line)
        for name, (plan, _m, _bytes) in zip(("relative", "calibrated"), mixes):
            print(f"{'':8}{name} mix types: " + ", ".join(f"{t} x{n}" for t, n in plan.counts().items()))
    print("\nratio: mix KLD / single KLD at the single file's size (< 1: the mix is closer to F16)")


if __name__ == "__main__":
    main()
