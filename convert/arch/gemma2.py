"""Gemma 2 (Gemma2ForCausalLM): RMSNorm stores w where the model uses (1 + w), norms before and
after attention and MLP, tanh soft-capping of attention scores and final logits, sliding-window
attention on every other layer, tied embeddings."""
from __future__ import annotations

import gguf

from .base import Arch


class Gemma2(Arch):
    gguf_arch = gguf.MODEL_ARCH.GEMMA2
    hf_names = ("Gemma2ForCausalLM",)

    @property
    def tied_embeddings(self) -> bool:
        return True  # llama.cpp's gemma2 always reads the output from token_embd

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        # llama.cpp scales attention by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 46-layer 27B.
        scalar = c.get("query_pre_attn_scalar", self.head_dim)
        expected = self.hidden // self.n_head if self.n_layers == 46 else self.head_dim
        if scalar != expected:
            raise self.bad(f"query_pre_attn_scalar {scalar} is not what llama.cpp assumes for this model ({expected})")
        # llama.cpp's gemma2 slides on even layers (0, 2, ...) and has no key to say otherwise.
        layer_types = c.get("layer_types")
        expected_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(self.n_layers)]
        if layer_types and list(layer_types) != expected_types:
            raise self.bad("layer_types: llama.cpp's gemma2 slides on even layers only, this model does otherwise")
        super().add_hparams(w)
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        if c.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(float(c["attn_logit_softcapping"]))
        if c.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
        if c.get("sliding_window"):
            w.add_sliding_window(int(c["sliding_window"]))

    def modify(self, hf_name: str, tensor):
        return tensor + 1.0 if hf_name.endswith("norm.weight") else tensor
