"""LoRA layers made cheaper on the CPU: the same dropout statistics and the same model outputs."""
import pytest
import torch

from edgetune.steps.train import lora_cpu


def test_drop_mask_drops_each_element_with_probability_p():
    torch.manual_seed(0)
    for p in (0.05, 0.1, 0.5):
        mask = lora_cpu.drop_mask((513, 1001), p)  # an odd size: not a multiple of the 4 slices per draw
        assert mask.shape == (513, 1001) and mask.dtype == torch.bool
        assert mask.float().mean().item() == pytest.approx(p, abs=0.003)
        assert mask.float().mean(0).std().item() < 0.05  # no column always kept or dropped


def test_fast_dropout_scales_masks_and_backpropagates_like_dropout():
    drop = lora_cpu.FastDropout(0.2)
    x = torch.randn(64, 128, requires_grad=True)
    torch.manual_seed(1)
    y = drop(x)
    dropped = y == 0
    assert torch.allclose(y[~dropped], x[~dropped] / 0.8)
    assert dropped.float().mean().item() == pytest.approx(0.2, abs=0.03)
    y.sum().backward()
    assert torch.allclose(x.grad, (~dropped).float() / 0.8)
    torch.manual_seed(1)
    assert torch.equal(drop(x), y)  # torch's seeded generator: reproducible
    drop.eval()
    assert drop(x) is x


def test_speed_up_keeps_the_lora_model_output(tiny_base):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_base)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear",
                                      init_lora_weights=False))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model.eval()
    with torch.no_grad():
        before = model(ids).logits
    done = lora_cpu.speed_up(model, autocast_bf16=True)
    assert len(done) == 2 and "dropout" in done[0]
    layers = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    assert layers and all(isinstance(m.lora_dropout["default"], lora_cpu.FastDropout) for m in layers)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before)
        assert all(m.cast_input_dtype_enabled for m in layers)  # outside autocast PEFT's cast stays
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(ids)
        assert not any(m.cast_input_dtype_enabled for m in layers)
        model.get_base_model().to(torch.bfloat16)  # bf16 base, fp32 adapters: works outside autocast too
        for m in layers:
            m.lora_A.float(), m.lora_B.float()
        model(ids)
    model.train()
    model(ids, labels=ids).loss.backward()  # trains: gradients reach every adapter
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
