"""Qwen3-MoE (Qwen3MoeForCausalLM): Qwen3's attention (q/k norms, explicit head_dim) with a
mixture-of-experts feed-forward in every layer: a router (`mlp.gate`, softmax over the experts,
top-k, renormalised) and `num_experts` SwiGLU experts of width `moe_intermediate_size`.

llama.cpp keeps each layer's experts as three stacked tensors, `blk.N.ffn_{gate,up,down}_exps`
(experts on the outermost axis). Checkpoints hold them per expert
(`mlp.experts.E.gate_proj.weight`: what the hub's files have, and what transformers 5 writes
when it saves) or fused (`mlp.experts.gate_up_proj` [experts, 2 x width, hidden] and
`mlp.experts.down_proj`, transformers 5's in-memory layout); `parts` places either into the stacks,
so the converter streams expert by expert.
"""
from __future__ import annotations

import re

import gguf

from .base import Part
from .qwen3 import Qwen3

PER_EXPERT = re.compile(r"(.+\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
FUSED = re.compile(r"(.+\.mlp\.experts)\.(gate_up_proj|down_proj)(?:\.weight)?")


class Qwen3Moe(Qwen3):
    gguf_arch = gguf.MODEL_ARCH.QWEN3MOE
    hf_names = ("Qwen3MoeForCausalLM",)

    def __init__(self, cfg: dict, where: str):
        super().__init__(cfg, where)
        # hub configs say num_experts; transformers 5 saves it as num_local_experts
        self.n_experts = cfg.get("num_experts") or self.need("num_local_experts")
        self.n_used = self.need("num_experts_per_tok")
        self.expert_width = self.need("moe_intermediate_size")

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        c = self.cfg
        # llama.cpp's qwen3moe has a mixture in every layer and always renormalises the top-k weights.
        if c.get("decoder_sparse_step", 1) != 1 or c.get("mlp_only_layers"):
            raise self.bad(f"dense layers between the MoE ones (decoder_sparse_step {c.get('decoder_sparse_step', 1)}, "
                           f"mlp_only_layers {c.get('mlp_only_layers') or []}): llama.cpp's {self.arch_name} has "
                           "experts in every layer")
        if c.get("norm_topk_prob") is False:
            raise self.bad(f"norm_topk_prob false: llama.cpp's {self.arch_name} always renormalises the chosen "
                           "experts' weights")
        if not 0 < self.n_used <= self.n_experts:
            raise self.bad(f"num_experts_per_tok {self.n_used} must be in 1..num_experts ({self.n_experts})")
        super().add_hparams(w)
        w.add_expert_count(self.n_experts)
        w.add_expert_used_count(self.n_used)
        w.add_expert_feed_forward_length(self.expert_width)

    def keeps_f32(self, gguf_name: str) -> bool:
        # The router stays F32: rounding its scores can swap which experts a token goes to
        # (llama.cpp's quantizer never quantizes it either).
        return gguf_name.endswith("ffn_gate_inp.weight") or super().keeps_f32(gguf_name)

    def gguf_name(self, hf_name: str) -> str | None:
        """One expert's projection is named by the stacked tensor it is a slot of."""
        m = PER_EXPERT.fullmatch(hf_name)
        if m:
            return super().gguf_name(f"{m.group(1)}.{m.group(3)}.weight")
        return super().gguf_name(hf_name)

    def parts(self, hf_name: str, shape: tuple[int, ...]) -> list[Part]:
        m = PER_EXPERT.fullmatch(hf_name)
        if m:
            expert = int(m.group(2))
            if expert >= self.n_experts:
                raise self.bad(f"{hf_name}: expert {expert} but num_experts is {self.n_experts}")
            return [Part(self.gguf_name(hf_name), expert, self.n_experts)]
        m = FUSED.fullmatch(hf_name)
        if m and len(shape) == 3:
            stem = m.group(1)
            if m.group(2) == "down_proj":
                return [Part(super().gguf_name(f"{stem}.down_proj.weight"))]
            width = shape[1] // 2  # gate rows first, then up rows
            return [Part(super().gguf_name(f"{stem}.gate_proj.weight"), rows=slice(0, width)),
                    Part(super().gguf_name(f"{stem}.up_proj.weight"), rows=slice(width, 2 * width))]
        return super().parts(hf_name, shape)
