"""Phi-3 / Phi-3.5 mini, Phi-4-mini (Phi3ForCausalLM): fused qkv_proj and gate_up_proj (llama.cpp
keeps both fused: attn_qkv, and ffn_up of twice the width), NeoX RoPE on part of each head
(partial_rotary_factor), LongRoPE as rope_factors_long/short tensors."""
from __future__ import annotations

import math

import gguf
import numpy as np

from .base import Arch


class Phi3(Arch):
    gguf_arch = gguf.MODEL_ARCH.PHI3
    hf_names = ("Phi3ForCausalLM",)
    rope_types = ("default", "longrope")

    @property
    def rope_dims(self) -> int:
        factor = self.rope.get("partial_rotary_factor", self.cfg.get("partial_rotary_factor", 1.0))
        return int(self.head_dim * factor)

    @property
    def original_context(self) -> int:
        return int(self.rope.get("original_max_position_embeddings")
                   or self.cfg.get("original_max_position_embeddings")
                   or self.cfg.get("max_position_embeddings", 4096))

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        super().add_hparams(w)
        w.add_rope_scaling_orig_ctx_len(self.original_context)
        # llama.cpp tells Phi-4-mini (no sliding window) from Phi-3 by a zero here.
        w.add_sliding_window(int(c.get("sliding_window") or 0))

    def add_rope_scaling(self, w: gguf.GGUFWriter) -> None:
        p = self.rope
        if p["rope_type"] not in self.rope_types:
            raise self.bad(f"rope scaling '{p['rope_type']}' is not supported for phi3 (supported: default, longrope)")
        if p["rope_type"] != "longrope":
            return
        half = self.rope_dims // 2
        for key in ("long_factor", "short_factor"):
            if len(p.get(key) or []) != half:
                raise self.bad(f"rope {key} has {len(p.get(key) or [])} values, LongRoPE needs rope dims / 2 = {half}")
        scale = self.cfg.get("max_position_embeddings", self.original_context) / self.original_context
        attn = p.get("attention_factor")
        if attn is None:
            attn = math.sqrt(1 + math.log(scale) / math.log(self.original_context)) if scale > 1 else 1.0
        w.add_rope_scaling_attn_factors(float(attn))

    def extra_tensors(self) -> dict[str, np.ndarray]:
        if self.rope["rope_type"] != "longrope":
            return {}
        return {"rope_factors_long.weight": np.array(self.rope["long_factor"], dtype=np.float32),
                "rope_factors_short.weight": np.array(self.rope["short_factor"], dtype=np.float32)}
