"""Phi-3 / Phi-3.5 mini (Phi3ForCausalLM): fused qkv and gate_up projections, NeoX RoPE, maybe partial."""
from __future__ import annotations

import gguf

from edgetune.errors import EdgetuneError

from .base import Arch


class Phi3(Arch):
    gguf_arch = gguf.MODEL_ARCH.PHI3
    hf_names = ("Phi3ForCausalLM",)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        if c.get("rope_scaling") or (c.get("rope_parameters") or {}).get("rope_type") not in (None, "default"):
            raise EdgetuneError(f"{self.where}/config.json: Phi-3 long-context RoPE scaling is not supported yet")
        super().add_hparams(w)
        w.add_rope_dimension_count(int(self.head_dim * c.get("partial_rotary_factor", 1.0)))
        if c.get("sliding_window"):
            w.add_sliding_window(c["sliding_window"])
