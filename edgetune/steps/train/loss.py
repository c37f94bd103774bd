"""Output head and cross-entropy only at the positions that carry loss.

A small model's output head is most of its cost: Gemma 3 270M's is 262,144 x 640, about as much per
token as the rest of the model, forward and backward. With loss on the response only, most logits are
thrown away. TRL's SFTTrainer already routes the loss through a fused head (`fused_lm_head=True`), but
off Triton devices it scores every position and recomputes every logit in backward. Here the decoder
runs to its final hidden states, the positions whose shifted label is not -100 are gathered, and the
head (with the family's final scaling and soft-capping) and the loss run there only:

- when the gathered logits fit in `plain_bytes`, plain autograd (one head matmul forward, one backward);
- otherwise (always on CUDA) TRL's chunked log-prob function on the gathered positions, so no
  full-vocabulary logits tensor for the batch ever exists.

The patched forward keeps TRL's contract (`FusedCausalLMOutput`: loss, log_probs, entropy, is_top1,
label_mask), so TRL's loss scaling, metrics and token counts stay as they are.
"""
from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import FusedCausalLMOutput

PLAIN_BYTES_CPU = 2 << 30  # gathered fp32 logits up to 2 GiB (kept with their softmax for backward)
VOCAB_CHUNK = 32768  # vocabulary columns per tile in the chunked path (TRL's choice)


def final_logit_ops(config) -> tuple[float, float | None]:
    """(scale, softcap) the family applies to the head's output: logits * scale, then cap * tanh(logits / cap).

    Gemma 2/3/4 soft-cap (`final_logit_softcapping`); Cohere multiplies by `logit_scale`; Granite and
    MiniCPM3 divide by `logits_scaling`; Falcon-H1 multiplies by `lm_head_multiplier`. `check_head`
    compares against the model's own forward, so a family doing something else is caught, not trained wrong.
    """
    c = config.get_text_config()
    softcap = getattr(c, "final_logit_softcapping", None)
    scale = getattr(c, "logit_scale", None)
    if scale is None:
        scale = getattr(c, "lm_head_multiplier", None)
    if scale is None and getattr(c, "logits_scaling", None):
        scale = 1 / c.logits_scaling
    return (1.0 if scale is None else float(scale)), (float(softcap) if softcap else None)


def token_log_probs(hidden, head, targets, scale: float = 1.0, softcap: float | None = None,
                    plain_bytes: int = PLAIN_BYTES_CPU):
    """log p(target), entropy and whether the target is the argmax, for each row of `hidden` (N, H)."""
    n, vocab = hidden.shape[0], head.weight.shape[0]
    if hidden.device.type != "cuda" and n * vocab * 4 <= plain_bytes:
        logits = F.linear(hidden, head.weight, head.bias)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # softmax in fp32 (fp64 stays)
        if scale != 1.0:
            logits = logits * scale
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        logp = torch.log_softmax(logits, -1)
        target_logp = logp.gather(-1, targets[:, None])[:, 0]
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
            # The first maximum, as TRL counts it: a tie with an earlier token is not a top-1 prediction.
            is_top1 = logits.argmax(-1) == targets
        return target_logp, entropy, is_top1
    logp, entropy, _, _, is_top1 = ChunkedLogProbFunction.apply(
        hidden, head.weight, head.bias, targets, 1.0, VOCAB_CHUNK, softcap, scale, ("entropy", "is_top1"))
    return logp, entropy.detach(), is_top1


def install(model, plain_bytes: int = PLAIN_BYTES_CPU) -> None:
    """Patch `model` (the causal LM under PEFT, after TRL's `add_fused_lm_head`): `fused_lm_head=True`
    calls score only the positions with a label. Anything this path does not cover goes to TRL's forward."""
    trl_forward = model.forward
    text_config = model.config.get_text_config()
    scale, softcap = final_logit_ops(model.config)

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        head = self.get_output_embeddings()
        if (not fused_lm_head or labels is None or shift_labels is not None or args
                or kwargs.get("output_router_logits") or getattr(text_config, "output_router_logits", False)
                or type(head) is not torch.nn.Linear):  # a LoRA-wrapped head: its weight alone is not the head
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(**kwargs).last_hidden_state[:, :-1]
        hidden = hidden.to(head.weight.device)
        labels = labels[:, 1:].to(head.weight.device)
        mask = labels != -100
        logp, entropy, is_top1 = token_log_probs(hidden[mask], head, labels[mask], scale, softcap, plain_bytes)
        # masked_scatter keeps an all-masked micro-batch connected to the graph: a differentiable zero.
        log_probs = logp.new_zeros(mask.shape).masked_scatter(mask, logp)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(
            loss=loss, log_probs=log_probs, label_mask=mask,
            entropy=entropy.new_zeros(mask.shape).masked_scatter(mask, entropy),
            is_top1=torch.zeros_like(mask).masked_scatter(mask, is_top1))

    model.forward = types.MethodType(forward, model)
    model.edgetune_trl_forward = trl_forward


def check_head(model, batch: dict, rtol: float = 1e-3) -> str | None:
    """Compare the loss at loss positions with the model's own full-logits forward on one collated batch
    (with labels; no grad). Returns None when they agree, else why; the caller then puts TRL's forward
    back with `uninstall`."""
    with torch.no_grad():
        ours = model(**batch, fused_lm_head=True).loss
        full = model(**batch).loss
    if not torch.isfinite(ours) or abs(float(ours) - float(full)) > rtol * max(1.0, abs(float(full))):
        return f"loss at loss positions {float(ours):.6f} vs the model's own {float(full):.6f}"
    return None


def uninstall(model) -> None:
    trl_forward = getattr(model, "edgetune_trl_forward", None)
    if trl_forward is not None:
        model.forward = trl_forward
        del model.edgetune_trl_forward
