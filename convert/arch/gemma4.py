"""Gemma 4 text (Gemma4ForCausalLM, and the text model of Gemma4ForConditionalGeneration, vision
and audio towers left out), as llama.cpp's `gemma4` runs it.

What sets it apart from Gemma 3:
- RMSNorm weights are used as stored (no 1 + w), q/k norms, v normalised without a weight.
- Per-layer embeddings (E2B/E4B): a second token table `embed_tokens_per_layer` (n_layer x ple
  dims per token), mixed with a projection of the main embedding, feeds a small gated block at the
  end of every layer (`per_layer_input_gate`, `per_layer_projection`, `post_per_layer_input_norm`).
- Sliding and full attention layers of different head sizes (`head_dim` / `global_head_dim`);
  the full layers use "proportional" RoPE: the first partial_rotary_factor of each head's
  frequencies rotate, the rest do not. llama.cpp's NeoX RoPE rotates all, so a `rope_freqs`
  tensor divides the unrotated frequencies by 1e30 (what llama.cpp's own converter does).
- KV sharing: the last `num_kv_shared_layers` layers reuse the keys and values of the last
  unshared layer of their type (and have no k/v weights); `use_double_wide_mlp` doubles their MLP.
- `attention_k_eq_v` (the 31B): full layers have no v_proj, values are the keys.
- A learned scalar per layer (`layer_scalar`), attention scale 1, final logit soft-capping.

Not converted (an error before training): the mixture-of-experts block (26B-A4B), attention
biases, bidirectional attention, and KV-sharing layouts llama.cpp's fixed reuse rule cannot express.
"""
from __future__ import annotations

import gguf
import numpy as np

from edgetune.errors import EdgetuneError

from .base import Arch, rope_params

# llama.cpp's gemma4 leaves a frequency unrotated by dividing it by this (its own converter's value).
UNROTATED = 1e30
# transformers' Gemma4TextConfig defaults, for a config.json that leaves rope_parameters out
HF_DEFAULT_ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                   "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                      "rope_theta": 1_000_000.0}}
NON_TEXT = {"model.embed_vision.": "vision embedder", "model.embed_audio.": "audio embedder",
            "embed_vision.": "vision embedder", "embed_audio.": "audio embedder"}


class Gemma4(Arch):
    gguf_arch = gguf.MODEL_ARCH.GEMMA4
    hf_names = ("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration")

    def __init__(self, cfg: dict, where: str):
        super().__init__(cfg, where)
        self.layer_types = list(cfg.get("layer_types") or
                                ["sliding_attention" if (i + 1) % 6 else "full_attention"
                                 for i in range(self.n_layers)])
        self.global_head_dim = int(self._full_layer_value("global_head_dim", "head_dim") or 512)  # HF's default
        k_eq_v = bool(cfg.get("attention_k_eq_v"))
        self.global_kv = self._full_layer_value("num_global_key_value_heads", "num_key_value_heads") if k_eq_v else None
        self.n_shared = int(cfg.get("num_kv_shared_layers") or 0)
        self.ple_dims = int(cfg.get("hidden_size_per_layer_input") or 0)

    def _full_layer_value(self, key: str, per_layer_key: str):
        """A full-attention layer's setting: its own key, or transformers 5's per_layer_config."""
        if self.cfg.get(key) is not None:
            return self.cfg[key]
        for index, overrides in (self.cfg.get("per_layer_config") or {}).items():
            if (str(index).isdigit() and int(index) < len(self.layer_types)
                    and self.layer_types[int(index)] == "full_attention" and per_layer_key in (overrides or {})):
                return overrides[per_layer_key]
        return None

    @property
    def tied_embeddings(self) -> bool:
        return self.cfg.get("tie_word_embeddings", True)

    def rope_layer(self, layer_type: str) -> dict:
        if not self.cfg.get("rope_parameters") and not self.cfg.get("rope_scaling"):
            return dict(HF_DEFAULT_ROPE[layer_type])
        return rope_params(self.cfg, layer_type, HF_DEFAULT_ROPE[layer_type]["rope_theta"])

    def check(self) -> None:
        """Everything llama.cpp's gemma4 cannot run, or edgetune does not convert, as one clear line."""
        c = self.cfg
        if c.get("enable_moe_block"):
            raise self.bad("enable_moe_block: the Gemma 4 mixture-of-experts block (26B-A4B) is not supported "
                           "(the dense E2B/E4B/31B text models are)")
        if c.get("attention_bias"):
            raise self.bad("attention_bias: llama.cpp's gemma4 has no attention biases")
        if c.get("use_bidirectional_attention") == "all":
            raise self.bad("use_bidirectional_attention 'all': llama.cpp's gemma4 is causal on text")
        if c.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu"):
            raise self.bad(f"hidden_activation {c['hidden_activation']!r}: llama.cpp's gemma4 uses GELU")
        if len(self.layer_types) != self.n_layers or set(self.layer_types) - {"sliding_attention", "full_attention"}:
            raise self.bad(f"layer_types must name sliding_attention/full_attention for all {self.n_layers} layers")
        if self.ple_dims and c.get("vocab_size_per_layer_input", c.get("vocab_size")) != c.get("vocab_size"):
            raise self.bad(f"vocab_size_per_layer_input {c.get('vocab_size_per_layer_input')} differs from "
                           f"vocab_size {c.get('vocab_size')}: llama.cpp indexes both tables by the same token")
        if self.n_shared:
            # llama.cpp's rule: a shared full layer reuses layer (first - 1), a shared sliding layer
            # (first - 2); transformers reuses the last unshared layer of the same type.
            first = self.n_layers - self.n_shared
            if first < 2 or self.layer_types[first - 1] != "full_attention" or \
                    self.layer_types[first - 2] != "sliding_attention":
                raise self.bad(f"num_kv_shared_layers {self.n_shared}: llama.cpp's gemma4 needs the last two unshared "
                               f"layers ({first - 2}, {first - 1}) to be sliding then full attention")
        sliding = self.rope_layer("sliding_attention")
        if sliding["rope_type"] != "default":
            raise self.bad(f"rope scaling '{sliding['rope_type']}' on sliding layers is not supported for gemma4 "
                           "(supported: default)")
        full = self.rope_layer("full_attention")
        if full["rope_type"] not in ("default", "proportional"):
            raise self.bad(f"rope scaling '{full['rope_type']}' on full layers is not supported for gemma4 "
                           "(supported: default, proportional)")

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        self.check()
        c = self.cfg
        swa = [t == "sliding_attention" for t in self.layer_types]
        first_shared = self.n_layers - self.n_shared
        w.add_context_length(c.get("max_position_embeddings", 131072))
        w.add_embedding_length(self.hidden)
        n_ff = self.need("intermediate_size")
        if c.get("use_double_wide_mlp") and self.n_shared:
            w.add_feed_forward_length([n_ff * (2 if i >= first_shared else 1) for i in range(self.n_layers)])
        else:
            w.add_feed_forward_length(n_ff)
        w.add_block_count(self.n_layers)
        w.add_head_count(self.n_head)
        if self.global_kv is not None:
            w.add_head_count_kv([self.n_kv if s else int(self.global_kv) for s in swa])
        else:
            w.add_head_count_kv(self.n_kv)
        w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
        # full layers: key_length / rope dims; sliding layers: the _swa keys
        w.add_key_length(self.global_head_dim)
        w.add_value_length(self.global_head_dim)
        w.add_key_length_swa(self.head_dim)
        w.add_value_length_swa(self.head_dim)
        w.add_rope_dimension_count(self.global_head_dim)  # rope_freqs leaves the unrotated part alone
        w.add_rope_dimension_count_swa(self.head_dim)
        full = self.rope_layer("full_attention")
        w.add_rope_freq_base(full["rope_theta"])
        w.add_rope_freq_base_swa(self.rope_layer("sliding_attention")["rope_theta"])
        if float(full.get("factor", 1.0)) != 1.0:  # proportional RoPE divides every frequency by factor
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(full["factor"]))
        w.add_sliding_window(int(c.get("sliding_window") or 512))
        w.add_sliding_window_pattern(swa)
        w.add_shared_kv_layers(self.n_shared)
        w.add_embedding_length_per_layer_input(self.ple_dims)
        if c.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(c["final_logit_softcapping"]))

    def extra_tensors(self) -> dict[str, np.ndarray]:
        full = self.rope_layer("full_attention")
        factor = float(full.get("partial_rotary_factor", 1.0)) if full["rope_type"] == "proportional" else 1.0
        rotated = int(factor * self.global_head_dim // 2)  # as transformers counts them
        values = [1.0] * rotated + [UNROTATED] * (self.global_head_dim // 2 - rotated)
        return {"rope_freqs.weight": np.array(values, dtype=np.float32)}

    def left_out(self, hf_name: str) -> str | None:
        for prefix, what in NON_TEXT.items():
            if hf_name.startswith(prefix):
                return what
        return super().left_out(hf_name)

    def gguf_name(self, hf_name: str) -> str | None:
        name = super().gguf_name(hf_name)
        if name is not None and hf_name.endswith(".layer_scalar"):  # a bare buffer; llama.cpp wants .weight
            return name + ".weight"
        return name

    def lora_b_modify(self, hf_name: str, lora_b):
        if hf_name.endswith("per_layer_model_projection.weight"):
            # llama.cpp multiplies per_layer_model_proj without its LoRA hook: an adapter there would be ignored.
            raise EdgetuneError(f"{self.where}: {hf_name}: llama.cpp's gemma4 applies no LoRA adapter to the "
                                "per-layer input projection; export this adapter in the merged mode")
        return lora_b
