"""Merged GGUF from base + adapter: edgetune's single streaming pass against PEFT's
merge_and_unload + save_pretrained + convert, same base and adapter, F16 output.
Each run is a fresh process reporting wall time, peak RSS (VmHWM: ru_maxrss would carry over
the parent's high-water mark across exec) and bytes written (wchar).

    .venv/bin/python -m scripts.bench.batch --quick          # demo base
    .venv/bin/python -m scripts.bench.batch                  # Gemma 3 270M
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.time()
kind, base, adapter, out = sys.argv[1:5]
if kind == "streaming":
    from edgetune.batch import convert_merged
    convert_merged(__import__("pathlib").Path(base), __import__("pathlib").Path(adapter),
                   __import__("pathlib").Path(out), "m", ["F16"])
else:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from edgetune.convert import convert_hf_to_gguf
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out + "/merged")
    AutoTokenizer.from_pretrained(base).save_pretrained(out + "/merged")
    del model, merged
    convert_hf_to_gguf(out + "/merged", out + "/m-F16.gguf", "f16")
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
peak_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print("BENCH", json.dumps({"seconds": time.time() - t0, "rss_mb": peak_kb / 1024,
                           "written_mb": int(io["wchar"]) / 2**20}))
"""


def make_adapter(base: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    model.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    a = ap.parse_args()
    from edgetune import resolve_base
    spec = a.model or ("demo" if a.quick else "gemma3-270m")
    base = resolve_base(spec)
    repeats = a.repeats or (2 if a.quick else 2)
    results = {"peft+convert": [], "streaming": []}
    with tempfile.TemporaryDirectory() as tmp:
        adapter = make_adapter(base, Path(tmp) / "adapter")
        for i in range(repeats):
            for kind in results:
                out = Path(tmp) / f"{kind}-{i}"
                out.mkdir()
                p = subprocess.run([sys.executable, "-c", CHILD, kind, base, str(adapter), str(out)],
                                   capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
                line = [x for x in p.stdout.splitlines() if x.startswith("BENCH ")]
                if p.returncode or not line:
                    sys.exit(p.stderr[-3000:])
                results[kind].append(json.loads(line[-1][6:]))
    best = {k: min(v, key=lambda x: x["seconds"]) for k, v in results.items()}
    print(f"base {spec}, LoRA r16 on all linear layers, F16 GGUF, {repeats} alternating runs, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'':14}{'seconds':>9}{'peak RSS MiB':>14}{'written MiB':>13}")
    for k, b in best.items():
        print(f"{k:14}{b['seconds']:>9.2f}{b['rss_mb']:>14.0f}{b['written_mb']:>13.0f}")
    s, p = best["streaming"], best["peft+convert"]
    print(f"ratio streaming/peft+convert: time {s['seconds'] / p['seconds']:.2f}x, peak RSS "
          f"{s['rss_mb'] / p['rss_mb']:.2f}x, bytes written {s['written_mb'] / p['written_mb']:.2f}x")


if __name__ == "__main__":
    main()
