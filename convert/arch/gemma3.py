"""Gemma 3 (Gemma3ForCausalLM, and the text model of Gemma3ForConditionalGeneration, 4B and up,
vision tower left out): RMSNorm stores w where the model uses (1 + w), tied embeddings,
sliding-window layers with their own RoPE base, linear RoPE scaling on the global layers, q/k norms."""
from __future__ import annotations

import gguf

from edgetune.errors import EdgetuneError

from .base import Arch, rope_theta


class Gemma3(Arch):
    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    hf_names = ("Gemma3ForCausalLM", "Gemma3TextModel", "Gemma3ForConditionalGeneration")

    @property
    def tied_embeddings(self) -> bool:
        return self.cfg.get("tie_word_embeddings", True)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        # llama.cpp scales attention by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 62-layer
        # 27B; any other query_pre_attn_scalar would load fine and give wrong logits.
        scalar = c.get("query_pre_attn_scalar", self.head_dim)
        expected = self.hidden // self.n_head if self.n_layers == 62 else self.head_dim
        if scalar != expected:
            raise EdgetuneError(f"{self.where}/config.json: query_pre_attn_scalar {scalar} is not what llama.cpp "
                                f"assumes for this model ({expected})")
        w.add_context_length(c.get("max_position_embeddings", 131072))
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.need("intermediate_size"))
        w.add_block_count(self.n_layers)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_kv)
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_freq_base(rope_theta(c, "full_attention", 1_000_000.0))
        w.add_rope_freq_base_swa(rope_theta(c, "sliding_attention", c.get("rope_local_base_freq", 10000.0)))
        self.add_rope_scaling(w)  # the global layers' (4B and up: linear x8); sliding layers are unscaled
        if c.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(c["final_logit_softcapping"])
        if c.get("sliding_window") and c.get("sliding_window_pattern") != 1:
            w.add_sliding_window(c["sliding_window"])
        layer_types = c.get("layer_types")
        if layer_types:
            w.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])

    def modify(self, hf_name: str, tensor):
        return tensor + 1.0 if hf_name.endswith("norm.weight") else tensor
