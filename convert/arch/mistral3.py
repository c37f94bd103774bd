"""Ministral 3 / Mistral 3 text models (Ministral3ForCausalLM): a Llama with YaRN RoPE and Llama-4
attention temperature scaling (llama.cpp's mistral3 arch). The multimodal checkpoints
(Mistral3ForConditionalGeneration: Ministral 3, Mistral Small 3.1/3.2) convert their text model
(`language_model.*`, settings from text_config) and leave out the Pixtral tower and projector, as
llama.cpp's converter does; they are loaded for training by edgetune.models.load_causal_lm."""
from __future__ import annotations

import gguf

from .llama import Llama


class Mistral3(Llama):
    gguf_arch = gguf.MODEL_ARCH.MISTRAL3
    hf_names = ("Ministral3ForCausalLM", "Mistral3ForConditionalGeneration")
    yarn_mscale = True

    def add_rope_scaling(self, w: gguf.GGUFWriter) -> None:
        p = self.rope
        if p.get("mscale") is not None and p.get("mscale_all_dim") is not None \
                and float(p["mscale"]) != float(p["mscale_all_dim"]):
            raise self.bad(f"yarn mscale {p['mscale']} != mscale_all_dim {p['mscale_all_dim']}: llama.cpp's "
                           "mistral3 assumes they are equal")
        super().add_rope_scaling(w)
        if p["rope_type"] == "yarn" and p.get("mscale_all_dim") is not None:
            w.add_rope_scaling_yarn_log_mul(float(p["mscale_all_dim"]))
        if p.get("llama_4_scaling_beta") is not None:
            w.add_attn_temperature_scale(float(p["llama_4_scaling_beta"]))
