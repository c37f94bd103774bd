"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): NeoX RoPE (no permutation), biases on q/k/v."""
from __future__ import annotations

import gguf

from .base import Arch


class Qwen2(Arch):
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    hf_names = ("Qwen2ForCausalLM",)
