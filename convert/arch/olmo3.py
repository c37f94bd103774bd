"""OLMo 3 (Olmo3ForCausalLM): OLMo 2's layers (llama.cpp writes it as olmo2) with sliding-window
attention on three layers of four. llama.cpp's olmo2 graph runs the sliding layers with plain RoPE
(no YaRN scaling) and the full layers with the model's scaling, as transformers does."""
from __future__ import annotations

import gguf

from .base import rope_params
from .olmo2 import Olmo2


class Olmo3(Olmo2):
    hf_names = ("Olmo3ForCausalLM",)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        super().add_hparams(w)  # the full layers' RoPE base and scaling
        c = self.cfg
        sliding = rope_params(c, "sliding_attention")
        if sliding["rope_type"] != "default":
            raise self.bad(f"rope scaling '{sliding['rope_type']}' on the sliding-window layers: llama.cpp's olmo2 "
                           "runs them unscaled")
        if c.get("sliding_window"):
            w.add_sliding_window(int(c["sliding_window"]))
            # without layer_types transformers (and llama.cpp) make every 4th layer a full one
            layer_types = c.get("layer_types") or ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention"
                                                   for i in range(self.n_layers)]
            w.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
            if sliding["rope_theta"] != self.rope["rope_theta"]:
                w.add_rope_freq_base_swa(sliding["rope_theta"])
