"""IBM Granite 3.x dense (GraniteForCausalLM): a Llama with four multipliers, on the embeddings,
the attention scores, each residual branch and the logits (llama.cpp's granite arch)."""
from __future__ import annotations

import gguf

from .llama import Llama


class Granite(Llama):
    gguf_arch = gguf.MODEL_ARCH.GRANITE
    hf_names = ("GraniteForCausalLM",)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        super().add_hparams(w)
        c = self.cfg
        # Granite divides the logits by logits_scaling; llama.cpp's logit_scale key is that divisor.
        for key, add in (("attention_multiplier", w.add_attention_scale), ("embedding_multiplier", w.add_embedding_scale),
                         ("residual_multiplier", w.add_residual_scale), ("logits_scaling", w.add_logit_scale)):
            if c.get(key) is not None:
                add(float(c[key]))
