"""Qwen3 (Qwen3ForCausalLM): NeoX RoPE, per-head RMSNorm on q and k, explicit head_dim, tied
embeddings in the small sizes, YaRN where the config sets it. Its head_dim is not hidden / heads
in general: `Arch.add_hparams` writes the key/value lengths whenever they differ."""
from __future__ import annotations

import gguf

from .qwen2 import Qwen2


class Qwen3(Qwen2):
    gguf_arch = gguf.MODEL_ARCH.QWEN3
    hf_names = ("Qwen3ForCausalLM",)

