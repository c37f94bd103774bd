"""Llama 2/3, TinyLlama and the edgetune demo model (LlamaForCausalLM); Mistral is written as llama."""
from __future__ import annotations

import gguf

from .base import Arch, permute_rotary


class Llama(Arch):
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_names = ("LlamaForCausalLM", "MistralForCausalLM")

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        super().add_hparams(w)
        w.add_vocab_size(self.cfg["vocab_size"])

    def _permute_heads(self, hf_name: str) -> int | None:
        if hf_name.endswith("q_proj.weight"):
            return self.n_head
        if hf_name.endswith("k_proj.weight"):
            return self.n_kv
        return None

    def permutes_rows(self, hf_name: str) -> bool:
        return self._permute_heads(hf_name) is not None

    def modify(self, hf_name: str, tensor):
        heads = self._permute_heads(hf_name)
        return permute_rotary(tensor, heads) if heads else tensor

    def lora_b_modify(self, hf_name: str, lora_b):
        heads = self._permute_heads(hf_name)
        return permute_rotary(lora_b, heads) if heads else lora_b
