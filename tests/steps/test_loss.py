"""The output head at loss positions only: the same loss and LoRA gradients as the full computation."""
import pytest
import torch

from edgetune import loss

import arch_models


def tiny_lora_model(arch, dtype, softcap=None):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = arch_models.config_for(arch, vocab=300, bos=1, eos=2)
    if softcap is not None:
        config.final_logit_softcapping = softcap
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False))  # random A and B: both get gradients


def batch(completion_only: bool):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (3, 12), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0  # right padding
    attention[2, 6:] = 0
    labels = ids.masked_fill(attention == 0, -100)
    if completion_only:  # loss on the last few tokens of each row only
        labels[0, :8] = -100
        labels[1, :5] = -100
        labels[2, :4] = -100
    return ids, attention, labels


def loss_and_grads(model, ids, attention, labels, fused: bool, num_items=None):
    """Fused: the patched forward. Else the full computation: every position's logits from the model's own
    forward, in the model's dtype (transformers' own loss casts to fp32, too coarse for a float64 check)."""
    model.zero_grad()
    if fused:
        value = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True,
                      num_items_in_batch=num_items).loss
    else:
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
        value = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                  ignore_index=-100)
    value.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(g.abs().sum() > 0 for g in grads.values())
    return value.detach(), grads


@pytest.mark.parametrize("arch,softcap", [("llama", None), ("gemma3", 30.0)])
@pytest.mark.parametrize("completion_only", [True, False])
def test_loss_positions_head_equals_full_logits_float64(arch, softcap, completion_only):
    model = tiny_lora_model(arch, torch.float64, softcap)
    ids, attention, labels = batch(completion_only)
    ref_loss, ref_grads = loss_and_grads(model, ids, attention, labels, fused=False)

    base = model.get_base_model()
    scored = []
    plain = loss.token_log_probs

    def counting(hidden, *args, **kwargs):
        scored.append(hidden.shape[0])
        return plain(hidden, *args, **kwargs)

    loss.install(base)
    try:
        loss.token_log_probs = counting
        got_loss, got_grads = loss_and_grads(model, ids, attention, labels, fused=True)
    finally:
        loss.token_log_probs = plain
        loss.uninstall(base)
    assert scored == [int((labels[:, 1:] != -100).sum())]  # the head ran on the loss positions only
    assert abs(float(got_loss - ref_loss)) < 1e-6 * abs(float(ref_loss))
    assert ref_grads.keys() == got_grads.keys() and ref_grads
    for name, g in ref_grads.items():
        assert torch.allclose(got_grads[name], g, rtol=1e-6, atol=1e-9), name
    assert softcap is None or loss.final_logit_ops(base.config) == (1.0, softcap)


@pytest.mark.parametrize("completion_only", [True, False])
def test_chunked_path_equals_full_logits_float32(completion_only):
    """Past the plain-logits budget (and always on CUDA) the gathered positions go through TRL's chunked
    log-prob kernel; fp32 within 1e-4, and `num_items_in_batch` divides like the trainer's loss."""
    model = tiny_lora_model("gemma3", torch.float32, softcap=30.0)
    ids, attention, labels = batch(completion_only)
    n = int((labels[:, 1:] != -100).sum())
    ref_loss, ref_grads = loss_and_grads(model, ids, attention, labels, fused=False)
    base = model.get_base_model()
    loss.install(base, plain_bytes=0)
    try:
        got_loss, got_grads = loss_and_grads(model, ids, attention, labels, fused=True, num_items=torch.tensor(n))
    finally:
        loss.uninstall(base)
    assert abs(float(got_loss - ref_loss)) < 1e-4 * abs(float(ref_loss))
    for name, g in ref_grads.items():
        assert (got_grads[name] - g).norm() <= 1e-4 * g.norm() + 1e-8, name


def test_check_head_catches_a_family_it_does_not_know(monkeypatch):
    """A family whose final logit transform our registry misses must be caught before training."""
    model = tiny_lora_model("gemma3", torch.float32, softcap=2.0)  # a cap that bites on these logits
    ids, attention, labels = batch(True)
    base = model.get_base_model()
    loss.install(base)
    assert loss.check_head(model, {"input_ids": ids, "attention_mask": attention, "labels": labels}) is None
    loss.uninstall(base)
    monkeypatch.setattr(loss, "final_logit_ops", lambda config: (1.0, None))
    loss.install(base)
    assert "vs the model's own" in loss.check_head(model, {"input_ids": ids, "attention_mask": attention, "labels": labels})
    loss.uninstall(base)
    assert not hasattr(base, "edgetune_trl_forward")
