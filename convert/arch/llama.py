"""Llama 2/3.x (Llama 3 RoPE scaling as rope_freqs, tied embeddings of the 1B/3B), SmolLM2,
TinyLlama, the edgetune demo model (LlamaForCausalLM); Mistral 7B is written as llama."""
from __future__ import annotations

import gguf

from .base import Arch, permute_rotary


class Llama(Arch):
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_names = ("LlamaForCausalLM", "MistralForCausalLM")
    rope_types = ("default", "linear", "yarn", "llama3")

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        super().add_hparams(w)
        w.add_vocab_size(self.cfg["vocab_size"])

    def _permute_heads(self, hf_name: str) -> int | None:
        """llama.cpp's llama-style graphs rotate interleaved pairs: q/k rows (and biases) are reordered."""
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return self.n_head
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
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
