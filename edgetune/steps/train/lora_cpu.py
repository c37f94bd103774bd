"""PEFT's LoRA layers made cheaper to train on the CPU, same maths.

Profiled on Gemma 3 270M (LoRA r16 on all linear layers, bf16 autocast, 2 threads): LoRA dropout took
~18% of the CPU time, more than anything but the matmuls. torch's CPU dropout draws one Bernoulli
sample per element (3-4 ms for a 264 x 2048 input; 126 such inputs per forward). `FastDropout` cuts
its mask from 16-bit slices of torch's 64-bit random integers instead (one draw per four elements,
~0.6 ms): the same drop probability to 1/65536, the same 1/(1-p) scaling, the same generator (a
seeded run stays reproducible). And PEFT casts each LoRA layer's input to the adapter's fp32 dtype
before dropout; under bf16 autocast the matmul casts it straight back, so that copy is skipped (plain
LoRA linears; QLoRA's 4-bit layers keep it).

CUDA keeps PEFT's layers as they are (`speed_up` is only called for CPU training).
"""
from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as LoraLinear

LEVELS = 1 << 16  # mask resolution: p is rounded to a multiple of 1/65536


class FastDropout(torch.nn.Module):
    """Inverted dropout with a mask cut from 16-bit random integers (see the module's docstring)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x.masked_fill(drop_mask(x.shape, self.p, x.device), 0) * (1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_mask(shape, p: float, device=None) -> torch.Tensor:
    """True where an element is dropped, each with probability p (to 1/65536), from torch's default generator."""
    n = 1
    for d in shape:
        n *= d
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, 2**63 - 1)
    threshold = round(p * LEVELS) - LEVELS // 2  # int16 values are uniform over [-32768, 32767]
    return (words.view(torch.int16)[:n] < threshold).view(shape)


def speed_up(model, autocast_bf16: bool) -> list[str]:
    """Swap every LoRA layer's dropout for FastDropout and, under bf16 autocast, skip PEFT's fp32 cast of
    its input. Returns what was done, for the training log."""
    done, swapped, uncast = [], 0, []
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, d in list(dropouts.items()):
            if type(d) is torch.nn.Dropout and d.p > 0:
                dropouts[name] = FastDropout(d.p).train(d.training)
                swapped += 1
        # Plain LoRA linears only: PEFT's 4-bit layers (QLoRA) check CUDA's autocast, not the CPU's, and need the cast.
        if autocast_bf16 and isinstance(module, LoraLinear):
            uncast.append(module)
    if swapped:
        done.append(f"LoRA dropout from 16-bit random slices ({swapped} layers)")
    if uncast:
        # Only while the CPU's autocast is on: a forward outside it (the trainer's head check) needs the cast.
        def follow_autocast(_module, _args):
            on = torch.is_autocast_enabled("cpu")
            for layer in uncast:
                layer.cast_input_dtype_enabled = not on

        model.register_forward_pre_hook(follow_autocast)
        done.append("LoRA inputs kept in bf16 under autocast (no fp32 copy that autocast casts back)")
    return done
