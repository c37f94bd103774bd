"""Qwen3.5 (Qwen3_5ForCausalLM, and the text model of Qwen3_5ForConditionalGeneration with the
vision tower and the MTP head left out): a hybrid of gated delta-net linear attention and gated
full attention, written as llama.cpp's `qwen35`.

What llama.cpp's loader and graph expect, and HF stores otherwise:
  - RMSNorms (layer, final, q/k) compute x * (1 + w): llama.cpp multiplies by the stored weight, so
    1 is added; the delta-net's gated norm multiplies by w itself and is kept.
  - A_log is stored as A = -exp(A_log) (ssm_a), dt_bias as ssm_dt.bias, conv1d as a 2-D
    (channels, kernel) F32 tensor (ggml_ssm_conv wants F32; llama.cpp's quantizer leaves it).
  - With fewer key than value heads, HF lets each key head serve consecutive value heads
    (repeat_interleave); ggml broadcasts by tiling, so value heads are reordered from grouped
    [k0: v0 v1, k1: v0 v1] to tiled [k0v0 k1v0 k0v1 k1v1] everywhere they appear: the v rows of
    in_proj_qkv and of the conv, in_proj_z, in_proj_a/b, A_log, dt_bias and the columns of out_proj.
    A LoRA B gets the row reorder, out_proj's LoRA A the column one.
  - Full-attention q_proj is twice as wide (query and sigmoid gate interleaved per head), as
    llama.cpp reads it; RoPE is NeoX-style on partial_rotary_factor of each head, written as the
    interleaved M-RoPE llama.cpp runs (identical for text, where the three position ids agree).
  - Which layers are linear attention: the recurrent_layers array from layer_types.
"""
from __future__ import annotations

import gguf

from .base import Arch, text_name

LINEAR, FULL = "linear_attention", "full_attention"
# HF leaf names of the delta-net tensors whose rows (or, for out_proj, columns) follow the value heads
V_ROWS = (".linear_attn.in_proj_z.weight", ".linear_attn.in_proj_a.weight", ".linear_attn.in_proj_b.weight",
          ".linear_attn.A_log", ".linear_attn.dt_bias")


class Qwen35(Arch):
    gguf_arch = gguf.MODEL_ARCH.QWEN35
    hf_names = ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration")
    rope_types = ("default",)

    def __init__(self, cfg: dict, where: str):
        super().__init__(cfg, where)
        self.k_heads = self.need("linear_num_key_heads")
        self.v_heads = self.need("linear_num_value_heads")
        self.k_dim = self.need("linear_key_head_dim")
        self.v_dim = self.need("linear_value_head_dim")
        interval = int(cfg.get("full_attention_interval") or 4)
        self.layer_types = cfg.get("layer_types") or [FULL if (i + 1) % interval == 0 else LINEAR
                                                      for i in range(self.n_layers)]

    @property
    def rope_dims(self) -> int:
        factor = self.rope.get("partial_rotary_factor", self.cfg.get("partial_rotary_factor", 0.25))
        return int(self.head_dim * factor)

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        self.check_runnable()
        super().add_hparams(w)  # head_dim as key/value length where it is not hidden / heads
        sections = list(self.rope.get("mrope_section") or [11, 11, 10])
        w.add_rope_dimension_sections((sections + [0, 0, 0, 0])[:4])
        w.add_ssm_conv_kernel(self.need("linear_conv_kernel_dim"))
        w.add_ssm_state_size(self.k_dim)
        w.add_ssm_group_count(self.k_heads)
        w.add_ssm_time_step_rank(self.v_heads)
        w.add_ssm_inner_size(self.v_dim * self.v_heads)
        w.add_full_attention_interval(int(self.cfg.get("full_attention_interval") or 4))
        # gguf 0.19 has no writer method for this key; llama.cpp reads it before the interval.
        w.add_array(f"{self.arch_name}.attention.recurrent_layers", [t == LINEAR for t in self.layer_types])

    def check_runnable(self) -> None:
        """What llama.cpp's qwen35 graph cannot run, refused before training (by check_convertible)."""
        c = self.cfg
        if len(self.layer_types) != self.n_layers or set(self.layer_types) - {LINEAR, FULL}:
            raise self.bad(f"layer_types must list {self.n_layers} entries of {LINEAR} or {FULL} "
                           f"(got {self.layer_types})")
        if self.k_dim != self.v_dim:
            raise self.bad(f"linear_key_head_dim {self.k_dim} != linear_value_head_dim {self.v_dim}: llama.cpp's "
                           "qwen35 delta-net uses one head size for both")
        if self.v_heads % self.k_heads:
            raise self.bad(f"linear_num_value_heads {self.v_heads} is not a multiple of linear_num_key_heads "
                           f"{self.k_heads}")
        if c.get("attention_bias"):
            raise self.bad("attention_bias: llama.cpp's qwen35 has no attention output bias")
        if c.get("hidden_act", "silu") != "silu":
            raise self.bad(f"hidden_act {c['hidden_act']!r}: llama.cpp's qwen35 runs silu only")

    def left_out(self, hf_name: str) -> str | None:
        if hf_name.startswith(("mtp.", "model.mtp.")):
            return "MTP head"  # multi-token prediction, for speculative decoding only
        if hf_name.startswith(("model.visual.", "visual.")):
            return "vision tower"
        return super().left_out(hf_name)

    def gguf_name(self, hf_name: str) -> str | None:
        if hf_name.endswith(".linear_attn.dt_bias"):  # llama.cpp's name for it is a bias of dt_proj
            hf_name = hf_name[: -len("dt_bias")] + "dt_proj.bias"
        return super().gguf_name(hf_name)

    def gguf_shape(self, hf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if hf_name.endswith(".linear_attn.conv1d.weight"):
            return (shape[0], shape[-1])  # (channels, 1, kernel) -> (channels, kernel)
        return shape

    def keeps_f32(self, gguf_name: str) -> bool:
        return gguf_name.endswith("ssm_conv1d.weight")

    def _v_order(self, n_rows: int, head: int):
        """Row indices taking value heads from grouped to tiled order (n_rows = v_heads * head)."""
        import torch
        per_k = self.v_heads // self.k_heads
        return torch.arange(n_rows).reshape(self.k_heads, per_k, head).transpose(0, 1).reshape(-1)

    def _row_order(self, hf_name: str, n_rows: int):
        """The reorder of this tensor's rows, or None when they stay (also when k and v heads agree)."""
        import torch
        name = text_name(hf_name)
        if self.k_heads == self.v_heads or ".linear_attn." not in name:
            return None
        if name.endswith((".in_proj_qkv.weight", ".conv1d.weight")):
            qk = 2 * self.k_heads * self.k_dim
            return torch.cat([torch.arange(qk), qk + self._v_order(n_rows - qk, self.v_dim)])
        if name.endswith(V_ROWS):
            return self._v_order(n_rows, self.v_dim if name.endswith("in_proj_z.weight") else 1)
        return None

    def _column_order(self, hf_name: str, n_cols: int):
        if self.k_heads == self.v_heads or not text_name(hf_name).endswith(".linear_attn.out_proj.weight"):
            return None
        return self._v_order(n_cols, self.v_dim)

    def permutes_rows(self, hf_name: str) -> bool:
        return self.k_heads != self.v_heads and text_name(hf_name).endswith(
            (".in_proj_qkv.weight", ".in_proj_z.weight", ".in_proj_a.weight", ".in_proj_b.weight"))

    def modify(self, hf_name: str, tensor):
        name = text_name(hf_name)
        if name.endswith(".linear_attn.conv1d.weight"):
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[-1])
        elif name.endswith(".linear_attn.A_log"):
            tensor = -tensor.exp()
        elif name.endswith("norm.weight") and not name.endswith(".linear_attn.norm.weight"):
            tensor = tensor + 1.0
        rows = self._row_order(hf_name, tensor.shape[0])
        if rows is not None:
            tensor = tensor[rows]
        cols = self._column_order(hf_name, tensor.shape[-1])
        return tensor[:, cols] if cols is not None else tensor

    def lora_b_modify(self, hf_name: str, lora_b):
        rows = self._row_order(hf_name, lora_b.shape[0])
        return lora_b[rows] if rows is not None else lora_b

    def lora_a_modify(self, hf_name: str, lora_a):
        cols = self._column_order(hf_name, lora_a.shape[-1])
        return lora_a[:, cols] if cols is not None else lora_a
