import json

import pytest
import torch

from edgetune import train
from edgetune.events import Cancelled, CancelToken, TrainMetrics
from edgetune.runs import RunFolder


def _losses(run):
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], rows


def test_lora_loss_falls_and_adapter_changes_output(tiny_recipe, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    events = []
    adapter = train.train(tiny_recipe, RunFolder.of(tiny_recipe).dir, events.append)
    losses, _ = _losses(RunFolder.of(tiny_recipe).dir)
    # Batches are cut by length, so one logged loss depends on which lengths it saw: compare a few.
    assert len(losses) >= 4 and sum(losses[-3:]) / 3 < losses[0] * 0.8
    assert any(e.message.startswith("output head and loss at loss positions only") for e in events)
    summary = RunFolder.of(tiny_recipe).train_result()
    assert summary.method == "lora" and summary.steps == 12 and 0 < summary.trainable_params < summary.total_params
    assert summary.eval_loss > 0 and summary.eval_perplexity > 1
    # eval_steps 6 of 12: evaluated at step 6 and once at the end (not a second time at step 12).
    _, rows = _losses(RunFolder.of(tiny_recipe).dir)
    assert [r["step"] for r in rows if "eval_loss" in r] == [6, 12]
    # LoRA's AdamW is torch's fused kernel.
    ckpt = max((RunFolder.of(tiny_recipe).dir / "checkpoints").glob("checkpoint-*"), key=lambda d: int(d.name.split("-")[1]))
    assert torch.load(ckpt / "optimizer.pt", weights_only=True)["param_groups"][0]["fused"] is True
    assert any(isinstance(e, TrainMetrics) and e.kind == "progress" and e.loss is not None for e in events)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer.json").is_file()

    base = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter))
        after = tuned(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_cancel_then_resume_continues_from_checkpoint(tiny_recipe):
    cancel = CancelToken()

    def stop_at_step_6(e):
        if e.phase == "train" and e.step is not None and e.step >= 6:
            cancel.cancel()

    with pytest.raises(Cancelled):
        train.train(tiny_recipe, RunFolder.of(tiny_recipe).dir, stop_at_step_6, cancel)
    ckpts = sorted((RunFolder.of(tiny_recipe).dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts and not (RunFolder.of(tiny_recipe).dir / "adapter").exists()
    stopped_at = int(ckpts[-1].name.split("-")[1])
    assert 6 <= stopped_at < 12

    messages = []
    train.train(tiny_recipe, RunFolder.of(tiny_recipe).dir, lambda e: messages.append(e.message))
    assert any(m.startswith("resuming from checkpoint-") for m in messages)
    _, rows = _losses(RunFolder.of(tiny_recipe).dir)
    steps = [r["step"] for r in rows if "loss" in r]
    # The log is continuous: steps before the stop, then the resumed steps after it, no restart at 1.
    assert steps == sorted(steps) and steps[-1] == 12 and steps.count(2) == 1
    assert RunFolder.of(tiny_recipe).train_result().steps == 12


def test_qlora_on_cpu_trains_linear4bit(tiny_recipe):
    import bitsandbytes as bnb

    p = train.Plan("qlora", "cpu", "bf16")
    model = train.load_model(str(tiny_recipe.base), p)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_type == "nf4" for m in layers)
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)

    tiny_recipe.train.method = "qlora"
    tiny_recipe.train.dtype = "bf16"
    tiny_recipe.train.max_steps = 4
    adapter = train.train(tiny_recipe, RunFolder.of(tiny_recipe).dir)
    summary = RunFolder.of(tiny_recipe).train_result()
    assert summary.method == "qlora" and summary.steps == 4
    from safetensors.torch import load_file
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items())


def test_qlora_gradients_survive_an_eval_pass(tiny_base):
    """bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights at the first no-grad forward and then
    backpropagates wrongly without an error; our loader turns the repack off. Compare the LoRA
    gradients after an eval pass with those of a fresh model."""
    from peft import LoraConfig, get_peft_model

    def lora_grads(eval_first: bool):
        torch.manual_seed(0)
        model = train.load_model(str(tiny_base), train.Plan("qlora", "cpu", "bf16"))
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights="gaussian"))
        ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
        if eval_first:
            model.eval()
            with torch.no_grad():
                model(ids)
        model.train()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, after_eval = lora_grads(False), lora_grads(True)
    assert ref.keys() == after_eval.keys() and ref
    for name in ref:
        rel = (ref[name] - after_eval[name]).norm() / ref[name].norm().clamp_min(1e-12)
        assert rel < 0.05, f"{name}: gradient off by {rel:.0%} after an eval pass"


def test_cpu_bf16_only_where_the_layers_are_wide_enough(monkeypatch):
    """dtype auto on a CPU with bf16 units: bf16 autocast for a model as wide as Gemma 3 270M, fp32 for
    one as narrow as the demo's (where bf16 measured slower and bigger), each with its reason."""
    from transformers import Gemma3TextConfig, LlamaConfig

    monkeypatch.setattr(train, "cpu_bf16", lambda: (True, "bf16 autocast: the CPU has AMX-BF16"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    spec = train.TrainSpec()
    wide, narrow = Gemma3TextConfig(hidden_size=640), LlamaConfig(hidden_size=128)
    assert train.plan(spec, wide) == train.Plan("lora", "cpu", "bf16", "bf16 autocast: the CPU has AMX-BF16")
    p = train.plan(spec, narrow)
    assert p.dtype == "fp32" and "hidden 128" in p.why and "too narrow" in p.why
    assert train.plan(spec).dtype == "bf16"  # no model known yet: the CPU decides
    spec.dtype = "bf16"
    assert train.plan(spec, narrow).dtype == "bf16"  # asked for: kept


def test_estimate_before_training_is_sane_for_the_tiny_base(tiny_recipe, tiny_base):
    """The expected tokens/s shown before a run: this machine's matmul rate x the stated efficiency over
    the LoRA FLOPs per token of the recipe's batch shape; the data's own lengths make it closer."""
    from transformers import AutoConfig

    from edgetune import data as data_mod
    from edgetune.device import TRAINING_EFFICIENCY, lora_flops_per_token

    config = AutoConfig.from_pretrained(tiny_base)
    est = train.estimate(tiny_recipe)
    p = train.plan(tiny_recipe.train, config)
    assert (est.device, est.dtype, est.why) == (p.device, p.dtype, p.why)
    assert est.seq_len == tiny_recipe.data.max_length and est.batch_size == tiny_recipe.train.batch_size
    assert est.flops_per_token == lora_flops_per_token(config, tiny_recipe.data.max_length, 1.0)
    assert 0.1 < est.matmul_gflops < 1e6  # any CPU from a netbook to a server
    # matmul time at the stated efficiency plus the elementwise work measured here, per token
    matmul_s = est.flops_per_token / (est.matmul_gflops * 1e9 * TRAINING_EFFICIENCY["cpu"])
    assert 0 < est.elementwise_s_per_token < 1
    assert est.tokens_per_s == pytest.approx(1 / (matmul_s + est.elementwise_s_per_token))
    assert "elementwise work, measured here" in est.line()
    assert 10 < est.tokens_per_s < 1e9
    assert "trained tokens/s (an estimate:" in est.line() and f"{est.dtype} matmul measured here" in est.line()

    stats = data_mod.prepare(tiny_recipe.data, train.load_tokenizer(str(tiny_base))).stats
    shaped = train.estimate(tiny_recipe, stats)
    rows = [min(total, 64) for _, total in stats.lengths]
    assert shaped.seq_len == round(sum(rows) / len(rows)) < tiny_recipe.data.max_length
    # shorter rows and the output head only on the responses: fewer FLOPs per trained token
    assert shaped.flops_per_token < lora_flops_per_token(config, shaped.seq_len, 1.0) < est.flops_per_token
