"""SmolLM3 (SmolLM3ForCausalLM): a Llama whose every 4th layer has no RoPE (NoPE). llama.cpp
hard-codes that step (no GGUF key), so a checkpoint with another NoPE pattern is refused."""
from __future__ import annotations

import gguf

from .llama import Llama

NO_ROPE_STEP = 4  # llama.cpp's smollm3: layer il rotates unless (il + 1) % 4 == 0


class SmolLM3(Llama):
    gguf_arch = gguf.MODEL_ARCH.SMOLLM3
    hf_names = ("SmolLM3ForCausalLM",)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        uses_rope = self.cfg.get("no_rope_layers")  # 1: the layer rotates, 0: NoPE
        expected = [int((i + 1) % NO_ROPE_STEP != 0) for i in range(self.n_layers)]
        if uses_rope is not None and list(uses_rope) != expected:
            raise self.bad(f"no_rope_layers {list(uses_rope)} is not llama.cpp's fixed pattern (NoPE every "
                           f"{NO_ROPE_STEP}th layer: {expected})")
        if self.cfg.get("use_sliding_window"):
            raise self.bad("use_sliding_window: llama.cpp's smollm3 has no sliding-window attention")
        super().add_hparams(w)
