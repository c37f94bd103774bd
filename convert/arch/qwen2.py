"""Qwen2 / Qwen2.5 (Qwen2ForCausalLM): NeoX RoPE (no permutation), biases on q/k/v, tied
embeddings in the small sizes, YaRN where the config sets it."""
from __future__ import annotations

import gguf

from .base import Arch


class Qwen2(Arch):
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    hf_names = ("Qwen2ForCausalLM",)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        if self.cfg.get("use_sliding_window"):
            raise self.bad(f"use_sliding_window: llama.cpp's {self.arch_name} has no sliding-window attention")
        super().add_hparams(w)
