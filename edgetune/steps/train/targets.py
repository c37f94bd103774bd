"""What `train.targets` means on a given model: the decoder's linear layers that get LoRA adapters.

  all-linear  every linear layer of the decoder but the output head, as PEFT's "all-linear": fused
              projections (Phi-3's qkv_proj and gate_up_proj) included, vision towers left out, and
              the layers in NOT_ALL_LINEAR left out (name them to adapt them, merged mode only)
  attn        the attention projections (q/k/v/o, or a fused qkv_proj and o_proj; Qwen3.5's
              delta-net in_proj_qkv, in_proj_z and out_proj)
  qv          the query and value projections (a fused qkv_proj or in_proj_qkv as a whole: k comes with it)
  a,b,c       these module names; each must exist in the decoder or be its output head

The answer is a list of full module names, so PEFT adapts exactly these and nothing that merely
shares a leaf name (a vision tower's q_proj); `describe` is the line the training log prints.

Mixture-of-experts layers (Qwen3-MoE) hold their experts as 3-D parameters, not linear layers, so
no preset reaches them: `train.experts: true` adds them (`expert_parameters`, PEFT's
target_parameters: one LoRA pair per expert and projection). Off by default: each expert sees only
the tokens routed to it, an adapter on all of them is `experts` times the size, and attention
adapters carry most of a fine-tune's effect. The router (`mlp.gate`) is never adapted: changing
which experts a token goes to is a different model, not a small update.
"""
from __future__ import annotations

from collections import Counter

from edgetune.errors import EdgetuneError
from edgetune.inputs.recipe import TARGET_PRESETS

FUSED = {"qkv_proj": "q, k and v", "gate_up_proj": "gate and up", "in_proj_qkv": "q, k and v (delta-net)"}
# Linear layers of a decoder that all-linear leaves out, and why. Gemma 4's per-layer input
# projection runs once on the embeddings, and llama.cpp multiplies it without a LoRA hook, so a GGUF
# LoRA adapter could not carry it (its per-layer gate and projection inside each layer are adapted).
NOT_ALL_LINEAR = {"per_layer_model_projection": "Gemma 4's per-layer input projection: llama.cpp applies no "
                                                "LoRA adapter there"}


def decoder_linears(model) -> dict[str, object]:
    """Full name -> module for every linear layer of the text decoder (never the output head)."""
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    inside = {id(m) for m in decoder.modules()} if decoder is not None else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:  # bnb Linear4bit is a Linear
            continue
        if inside is not None and id(module) not in inside:
            continue
        out[name] = module
    return out


def resolve_targets(model, targets: str) -> list[str]:
    """The full module names `targets` selects in `model`; an empty selection is a user error."""
    linears = decoder_linears(model)
    preset = TARGET_PRESETS.get(targets)
    if targets == "all-linear":
        chosen = sorted(n for n in linears if n.rsplit(".", 1)[-1] not in NOT_ALL_LINEAR)
    elif preset is not None:
        chosen = sorted(n for n in linears if n.rsplit(".", 1)[-1] in preset)
    else:
        wanted = [t.strip() for t in targets.split(",") if t.strip()]
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        candidates = dict(linears)
        if head is not None:
            candidates.update({n: m for n, m in model.named_modules() if m is head})
        chosen = sorted(n for n in candidates if n.rsplit(".", 1)[-1] in wanted or n in wanted)
        found = {n.rsplit(".", 1)[-1] for n in chosen} | set(chosen)
        missing = [w for w in wanted if w not in found]
        if missing:
            raise EdgetuneError(f"train.targets: {', '.join(missing)} not in this model's decoder (its linear layers: "
                                f"{', '.join(leaf_names(linears))})")
    if not chosen:
        raise EdgetuneError(f"train.targets: {targets!r} selects no layer of this model (its linear layers: "
                            f"{', '.join(leaf_names(linears)) or 'none'})")
    return chosen


def expert_parameters(model) -> list[str]:
    """Full names of the stacked expert weights (3-D parameters of an `experts` module), in order."""
    out = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "experts":
            out += [f"{name}.{p}" for p, value in module.named_parameters(recurse=False) if value.dim() == 3]
    return out


def resolve_experts(model, adapt: bool) -> list[str]:
    """The expert weights `train.experts` adapts; asking for them on a dense model is a user error."""
    experts = expert_parameters(model)
    if adapt and not experts:
        raise EdgetuneError("train.experts: true, but this model has no mixture-of-experts layers")
    return experts if adapt else []


def leaf_names(names) -> list[str]:
    """Distinct last components, in first-seen order."""
    return list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))


def left_out_of_all_linear(model) -> list[str]:
    """The decoder's linear layers that all-linear does not adapt (NOT_ALL_LINEAR)."""
    return sorted(n for n in decoder_linears(model) if n.rsplit(".", 1)[-1] in NOT_ALL_LINEAR)


def describe(chosen: list[str], left_out: list[str] = (), experts: list[str] = (), experts_left: int = 0) -> str:
    """One line for the training log: which module kinds are adapted, how many, fused ones, the
    linear layers all-linear left out with the reason, and on a mixture-of-experts model whether
    the experts are."""
    counts = Counter(n.rsplit(".", 1)[-1] for n in chosen)
    parts = [f"{leaf} x{counts[leaf]}" for leaf in leaf_names(chosen)]
    fused = [f"{leaf} is fused {FUSED[leaf]}" for leaf in counts if leaf in FUSED]
    skipped = [f"{leaf} ({NOT_ALL_LINEAR[leaf]})" for leaf in leaf_names(left_out)]
    line = (f"LoRA on {len(chosen)} modules: {', '.join(parts)}" + (f" ({'; '.join(fused)})" if fused else "")
            + (f"; left out: {', '.join(skipped)}" if skipped else ""))
    if experts:
        stacked = Counter(n.rsplit(".", 1)[-1] for n in experts)
        line += "; experts: " + ", ".join(f"{leaf} x{stacked[leaf]}" for leaf in leaf_names(experts)) + \
                " (every expert's, stacked; router not adapted)"
    elif experts_left:
        line += f"; experts not adapted ({experts_left} stacked expert weights; train.experts: true adds them)"
    return line
