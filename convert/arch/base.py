"""What every architecture module provides: its gguf arch, hyperparameters and tensor quirks.

A module subclasses `Arch`, sets `gguf_arch`, and overrides `add_hparams`, `modify` and
`extra_tensors` only where its model differs from a plain Llama-like decoder. `gguf_name` is the
one HF -> GGUF tensor-name table every caller uses (converter, LoRA export, importance matrices).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gguf
import numpy as np

from edgetune.errors import EdgetuneError

# Multimodal checkpoints keep the text model under a prefix (transformers 5 and 4 layouts); the
# text model is converted with the plain names, the rest is left out and reported.
TEXT_PREFIXES = {"model.language_model.": "model.", "language_model.model.": "model.",
                 "language_model.lm_head.": "lm_head."}
NON_TEXT_PREFIXES = {"vision_tower.": "vision tower", "model.vision_tower.": "vision tower",
                     "vision_model.": "vision tower", "model.vision_model.": "vision tower",
                     "multi_modal_projector.": "multimodal projector",
                     "model.multi_modal_projector.": "multimodal projector",
                     "audio_tower.": "audio tower", "model.audio_tower.": "audio tower"}


def text_name(hf_name: str) -> str:
    """The name a text-only checkpoint would use for this tensor."""
    for prefix, plain in TEXT_PREFIXES.items():
        if hf_name.startswith(prefix):
            return plain + hf_name[len(prefix):]
    return hf_name


def rope_params(cfg: dict, layer_type: str | None = None, default_theta: float = 10000.0) -> dict:
    """RoPE settings from a transformers 5 config (`rope_parameters`, maybe per layer type) or a
    transformers 4 one (`rope_theta` + `rope_scaling`), as one dict with rope_type and rope_theta."""
    params = cfg.get("rope_parameters") or {}
    if isinstance(params.get(layer_type or "full_attention"), dict):
        params = params[layer_type or "full_attention"]
    out = {**(cfg.get("rope_scaling") or {}), **params}
    out["rope_type"] = out.get("rope_type") or out.get("type") or "default"
    out["rope_theta"] = float(out.get("rope_theta", cfg.get("rope_theta", default_theta)))
    return out


def rope_theta(cfg: dict, layer_type: str | None = None, default: float = 10000.0) -> float:
    return rope_params(cfg, layer_type, default)["rope_theta"]


@dataclass(frozen=True)
class Part:
    """Where an HF tensor's data goes in the GGUF: a whole tensor, one expert's slot of a tensor
    that stacks every expert of a layer (llama.cpp's ffn_*_exps), or a band of rows of a fused one."""
    gguf_name: str
    expert: int | None = None  # slot along the stacked expert axis (the GGUF tensor's first)
    experts: int = 0  # length of that axis; 0: not stacked
    rows: slice | None = None  # rows (second-to-last axis) of the HF tensor that belong here


class Arch:
    gguf_arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.LLAMA
    hf_names: tuple[str, ...] = ()
    # RoPE scaling kinds this llama.cpp architecture implements ("llama3" needs a rope_freqs tensor).
    rope_types: tuple[str, ...] = ("default", "linear", "yarn")
    yarn_mscale = False  # DeepSeek-style yarn mscale / mscale_all_dim: only where llama.cpp reads them

    def __init__(self, cfg: dict, where: str):
        self.cfg = cfg
        self.where = where
        self.n_layers = self.need("num_hidden_layers")
        self.n_head = self.need("num_attention_heads")
        self.n_kv = cfg.get("num_key_value_heads") or self.n_head
        self.hidden = self.need("hidden_size")
        self.head_dim = cfg.get("head_dim") or self.hidden // self.n_head
        self.rope = rope_params(cfg)
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layers)

    def need(self, key: str):
        if self.cfg.get(key) is None:
            raise EdgetuneError(f"{self.where}/config.json: missing '{key}'")
        return self.cfg[key]

    def bad(self, why: str) -> EdgetuneError:
        return EdgetuneError(f"{self.where}/config.json: {why}")

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    @property
    def tied_embeddings(self) -> bool:
        return bool(self.cfg.get("tie_word_embeddings", False))

    @property
    def rope_dims(self) -> int:
        return self.head_dim

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        w.add_context_length(c.get("max_position_embeddings", 2048))
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.need("intermediate_size"))
        w.add_block_count(self.n_layers)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_kv)
        w.add_rope_freq_base(self.rope["rope_theta"])
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        if self.head_dim != self.hidden // self.n_head:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.rope_dims)
        self.add_rope_scaling(w)

    def add_rope_scaling(self, w: gguf.GGUFWriter) -> None:
        """RoPE scaling as llama.cpp reads it; a kind this architecture does not run is refused."""
        p = self.rope
        kind = p["rope_type"]
        if kind not in self.rope_types:
            raise self.bad(f"rope scaling '{kind}' is not supported for {self.arch_name} "
                           f"(supported: {', '.join(self.rope_types)})")
        if kind == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(p["factor"]))
        elif kind == "yarn":
            unsupported = [k for k in ("mscale", "mscale_all_dim") if p.get(k) and not self.yarn_mscale]
            if unsupported:
                raise self.bad(f"yarn {unsupported[0]} (DeepSeek-style yarn) is not supported for {self.arch_name}")
            if p.get("truncate") is False:
                raise self.bad("yarn truncate=false is not what llama.cpp computes")
            factor = float(p["factor"])
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(int(p.get("original_max_position_embeddings")
                                                or self.cfg.get("original_max_position_embeddings")
                                                or self.need("max_position_embeddings")))
            if p.get("attention_factor") is not None:
                # llama.cpp multiplies its own 1 + 0.1 ln(factor) by rope.scaling.attn_factor; HF uses
                # attention_factor as the whole scale. (rope.scaling.yarn_attn_factor, which llama.cpp's
                # own converter writes, is read by grok alone.)
                w.add_rope_scaling_attn_factors(float(p["attention_factor"]) / (1 + 0.1 * math.log(factor)))
            if p.get("beta_fast") is not None:
                w.add_rope_scaling_yarn_beta_fast(float(p["beta_fast"]))
            if p.get("beta_slow") is not None:
                w.add_rope_scaling_yarn_beta_slow(float(p["beta_slow"]))

    def extra_tensors(self) -> dict[str, np.ndarray]:
        """Tensors llama.cpp needs that the checkpoint does not hold (Llama 3's rope_freqs)."""
        if self.rope["rope_type"] == "llama3":
            return {"rope_freqs.weight": llama3_rope_factors(self.rope, self.rope_dims, self.cfg)}
        return {}

    def left_out(self, hf_name: str) -> str | None:
        """What a tensor belongs to when it is not part of the text model (vision tower, ...)."""
        for prefix, what in NON_TEXT_PREFIXES.items():
            if hf_name.startswith(prefix):
                return what
        return None

    def dropped(self, hf_name: str) -> bool:
        """Tensors llama.cpp does not want: RoPE caches, other towers, and lm_head when it is the embedding."""
        name = text_name(hf_name)
        if name.endswith(("rotary_emb.inv_freq", ".attn.masked_bias", ".attn.bias")) or self.left_out(hf_name):
            return True
        return name == "lm_head.weight" and self.tied_embeddings

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF tensor name for an HF tensor name; None when it is dropped or unknown."""
        if self.dropped(hf_name):
            return None
        return self.name_map.get_name(text_name(hf_name), try_suffixes=(".weight", ".bias"))

    def parts(self, hf_name: str, shape: tuple[int, ...]) -> list[Part]:
        """Where this tensor is written; empty when it has no GGUF name. Mixture-of-experts
        architectures stack per-expert tensors and split fused ones here."""
        name = self.gguf_name(hf_name)
        return [Part(name)] if name is not None else []

    def gguf_shape(self, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape `modify` gives this tensor (a delta-net conv1d loses its middle axis)."""
        return shape

    def keeps_f32(self, gguf_name: str) -> bool:
        """Matrices llama.cpp only runs in F32 (a delta-net's ssm_conv1d), whatever the outtype."""
        return False

    def permutes_rows(self, hf_name: str) -> bool:
        """Whether `modify` reorders this weight's output rows (so a LoRA B needs `lora_b_modify`)."""
        return False

    def modify(self, hf_name: str, tensor):
        """Architecture quirks applied to an HF tensor before writing (permutations, offsets)."""
        return tensor

    def lora_b_modify(self, hf_name: str, lora_b):
        """The same quirk for a LoRA B matrix (rows are the weight's output rows); None: unsupported."""
        return lora_b

    def lora_a_modify(self, hf_name: str, lora_a):
        """The quirk's action on a weight's input columns, for a LoRA A matrix (columns are inputs)
        and an importance matrix's per-column values."""
        return lora_a


def permute_rotary(w, n_head: int):
    """HF Llama stores q/k for rotate-half RoPE; llama.cpp's llama arch wants pairs interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(p: dict, dims: int, cfg: dict) -> np.ndarray:
    """Llama 3.x RoPE scaling as per-frequency divisors (llama.cpp's rope_freqs tensor): long
    wavelengths are stretched by `factor`, short ones kept, the band between blended smoothly."""
    base = p["rope_theta"]
    factor = float(p.get("factor", 8.0))
    low, high = float(p.get("low_freq_factor", 1.0)), float(p.get("high_freq_factor", 4.0))
    old_ctx = float(p.get("original_max_position_embeddings") or cfg.get("original_max_position_embeddings") or 8192)
    freqs = 1.0 / (base ** (np.arange(0, dims, 2, dtype=np.float64) / dims))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)
