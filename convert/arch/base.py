"""What every architecture module provides: its gguf arch, hyperparameters and tensor quirks.

A module subclasses `Arch`, sets `gguf_arch`, and overrides `add_hparams` and `modify` only where
its model differs from a plain Llama-like decoder.
"""
from __future__ import annotations

import gguf

from edgetune.errors import EdgetuneError


def rope_theta(cfg: dict, layer_type: str | None = None, default: float = 10000.0) -> float:
    """rope_theta from a transformers 4 or 5 config (5 nests it in rope_parameters, per layer type)."""
    params = cfg.get("rope_parameters") or {}
    if layer_type and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    return float(params.get("rope_theta", cfg.get("rope_theta", default)))


class Arch:
    gguf_arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.LLAMA
    hf_names: tuple[str, ...] = ()

    def __init__(self, cfg: dict, where: str):
        self.cfg = cfg
        self.where = where
        self.n_layers = self.need("num_hidden_layers")
        self.n_head = self.need("num_attention_heads")
        self.n_kv = cfg.get("num_key_value_heads") or self.n_head
        self.hidden = self.need("hidden_size")
        self.head_dim = cfg.get("head_dim") or self.hidden // self.n_head
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layers)

    def need(self, key: str):
        if self.cfg.get(key) is None:
            raise EdgetuneError(f"{self.where}/config.json: missing '{key}'")
        return self.cfg[key]

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.cfg.get("tie_word_embeddings", False))

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        w.add_context_length(c.get("max_position_embeddings", 2048))
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.need("intermediate_size"))
        w.add_block_count(self.n_layers)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_kv)
        w.add_rope_freq_base(rope_theta(c))
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        if self.head_dim != self.hidden // self.n_head:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.head_dim)
        scaling = (c.get("rope_parameters") or {}).get("rope_type") or (c.get("rope_scaling") or {}).get("rope_type")
        if scaling not in (None, "default"):
            raise EdgetuneError(f"{self.where}/config.json: rope scaling '{scaling}' is not supported yet")

    def dropped(self, hf_name: str) -> bool:
        """Tensors llama.cpp does not want: RoPE caches, and lm_head when it is the embedding."""
        if hf_name.endswith(("rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias")):
            return True
        return hf_name == "lm_head.weight" and self.tied_embeddings

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF tensor name for an HF tensor name; None when it is dropped or unknown."""
        if self.dropped(hf_name):
            return None
        return self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def permutes_rows(self, hf_name: str) -> bool:
        """Whether `modify` reorders this weight's output rows (so a LoRA B needs `lora_b_modify`)."""
        return False

    def modify(self, hf_name: str, tensor):
        """Architecture quirks applied to an HF tensor before writing (permutations, offsets)."""
        return tensor

    def lora_b_modify(self, hf_name: str, lora_b):
        """The same quirk for a LoRA B matrix (rows are the weight's output rows); None: unsupported."""
        return lora_b


def permute_rotary(w, n_head: int):
    """HF Llama stores q/k for rotate-half RoPE; llama.cpp's llama arch wants pairs interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
