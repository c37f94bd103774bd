"""Memory of converting and merging a mixture-of-experts model: peak RSS against one layer's tensors.

Builds a Qwen3-MoE checkpoint locally (default 64 experts, 8 used, 8 layers, bf16; one tensor per
expert on disk, as hub checkpoints and transformers 5's save_pretrained have them) and a LoRA
adapter on every expert (train.experts). Each step runs in a fresh process that reports its peak
RSS (VmHWM) above its RSS after imports:

  hold whole   every tensor of the checkpoint read into memory: what holding the model costs (the baseline)
  convert      HF -> GGUF F16 (experts stacked into ffn_*_exps expert by expert)
  merge        base + adapter -> merged HF folder (tensor by tensor)
  batch        base + adapter -> GGUF F16 in one pass (the batch tool's merged mode)

and prints each as a multiple of one layer's tensors and of the whole checkpoint.

    nice -n 19 .venv/bin/python -m scripts.bench.moe_memory             # 64 experts, 8 layers (~0.4 GB)
    nice -n 19 .venv/bin/python -m scripts.bench.moe_memory --layers 4  # quicker
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def build(folder: Path, experts: int, layers: int, hidden: int, width: int) -> tuple[Path, Path]:
    """The checkpoint (bf16, per-expert tensors) and an adapter on attention and every expert."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from edgetune import corpus, train_tokenizer

    tok = train_tokenizer(corpus(300), vocab_size=1024)
    config = Qwen3MoeConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                            moe_intermediate_size=width, num_experts=experts, num_experts_per_tok=8,
                            num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                            decoder_sparse_step=1, norm_topk_prob=True, tie_word_embeddings=False,
                            max_position_embeddings=512)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.config.architectures = [type(model).__name__]
    base = folder / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    params = [f"model.layers.{i}.mlp.experts.{p}" for i in range(layers) for p in ("gate_up_proj", "down_proj")]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_parameters=params,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.01)
    adapter = folder / "adapter"
    peft_model.save_pretrained(adapter)
    return base, adapter


def sizes(base: Path) -> tuple[int, int]:
    """(bytes of layer 0's tensors, bytes of the whole checkpoint)."""
    from safetensors import safe_open
    layer = total = 0
    for shard in base.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                piece = f.get_slice(name)
                n = math.prod(piece.get_shape()) * DTYPE_BYTES[piece.get_dtype()]
                total += n
                layer += n if name.startswith("model.layers.0.") else 0
    return layer, total


def step(name: str, base: Path, adapter: Path, out: Path) -> None:
    """One measured step, in this (fresh) process; prints its peak RSS above the post-import RSS."""
    import torch  # noqa: F401  (imports before the reference point, as every step needs them)

    from edgetune import convert_merged, merge
    from edgetune.convert import convert_hf_to_gguf
    from edgetune.convert.model_folder import read_tensors

    def status(key: str) -> float:
        return int(open("/proc/self/status").read().split(f"{key}:")[1].split()[0]) * 1024

    start = status("VmRSS")
    if name == "hold whole":
        held = {}
        for shard in base.glob("*.safetensors"):
            held.update(read_tensors(shard))
    elif name == "convert":
        convert_hf_to_gguf(base, out / "base-F16.gguf", "f16")
    elif name == "merge":
        merge.merge(str(base), adapter, out / "merged")
    elif name == "batch":
        convert_merged(base, adapter, out, "batch", ["F16"])
    print("BENCH", json.dumps({"peak": status("VmHWM") - start, "start": start}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--width", type=int, default=256, help="moe_intermediate_size")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        d = Path(a.dir)
        step(a.step, d / "base", d / "adapter", d / "out")
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "out").mkdir()
        base, _adapter = build(d, a.experts, a.layers, a.hidden, a.width)
        layer, total = sizes(base)
        print(f"Qwen3-MoE, {a.experts} experts x {a.layers} layers, hidden {a.hidden}, expert width {a.width}, "
              f"bf16: checkpoint {total / 2**20:.0f} MiB in {len(list(base.glob('*.safetensors')))} shard(s), "
              f"one layer's tensors {layer / 2**20:.1f} MiB")
        print("| step | peak RSS above start, MiB | x one layer | x whole checkpoint |\n|---|---|---|---|")
        for name in ("hold whole", "convert", "merge", "batch"):
            run = subprocess.run([sys.executable, __file__, "--step", name, "--dir", str(d)], capture_output=True,
                                 text=True)
            line = [x for x in run.stdout.splitlines() if x.startswith("BENCH ")]
            if run.returncode or not line:
                sys.exit(f"{name} failed:\n{run.stderr[-3000:]}")
            peak = json.loads(line[-1][6:])["peak"]
            print(f"| {name} | {peak / 2**20:.0f} | {peak / layer:.2f} | {peak / total:.2f} |", flush=True)


if __name__ == "__main__":
    main()
