"""OLMo 2 (Olmo2ForCausalLM): norms after attention and MLP instead of before, RMSNorm on the
whole q and k projections, NeoX RoPE (no permutation)."""
from __future__ import annotations

import gguf

from .base import Arch


class Olmo2(Arch):
    gguf_arch = gguf.MODEL_ARCH.OLMO2
    hf_names = ("Olmo2ForCausalLM",)
