"""Mixture-of-experts (Qwen3-MoE) beyond the family test: LoRA on the experts themselves
(train.experts) through merge, the single-pass batch merge and a stacked GGUF LoRA adapter that
llama.cpp applies; checkpoints with fused or per-expert tensors and adapters of either layout;
what llama.cpp cannot run refused before training."""
import json
import shutil

import gguf
import numpy as np
import pytest
import torch

from edgetune import pipeline
from edgetune.convert import convert_hf_to_gguf, convert_lora_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.measure.metrics import nmse
from edgetune.runs import RunFolder
from edgetune.steps.merge import merge
from edgetune.steps.smoke import quick_check

from arch_models import build
from conftest import make_recipe
from convert_fixtures import hf_logits, llama_logits

PROMPT = "the last word of red fox tiger is tiger. Hello world 🙂 1234"
EXPERTS = 4


@pytest.fixture(scope="module")
def moe_base(tmp_path_factory):
    return build("qwen3moe", tmp_path_factory.mktemp("qwen3moe"))


def prompt_ids(model_dir):
    from transformers import AutoTokenizer
    return [AutoTokenizer.from_pretrained(str(model_dir))(PROMPT)["input_ids"]]


def lora_logits(base_gguf, lora_gguf, ids):
    from llama_cpp import Llama
    llm = Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=256, logits_all=True, verbose=False,
                n_threads=1)
    llm.eval(ids[0])
    out = np.array(llm.scores[: len(ids[0])], dtype=np.float32)
    llm.close()
    return [out]


def gguf_tensors(path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}


def safetensors_of(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def test_experts_adapted_train_merge_convert_lora_and_batch(moe_base, demo_jsonl, tmp_path):
    from edgetune.use.batch import convert_merged
    r = make_recipe(moe_base, demo_jsonl, tmp_path / "runs", data={"eval_split": 0.0},
                    train={"max_steps": 3, "targets": "all-linear", "lr": 5e-2, "experts": True, "dropout": 0.0})
    events = []
    pipeline.run(r, events.append, until="quantize")
    run = RunFolder.of(r)

    # the log names every adapted module: attention and both stacked expert weights of each layer, never the router
    adapted = next(e.data["targets"] for e in events if e.kind == "log" and e.data and "targets" in e.data)
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj",
                                                       "down_proj"}
    assert len(adapted) == 2 * 6 and not any(n.endswith("mlp.gate") for n in adapted)
    line = next(e.message for e in events if e.kind == "log" and e.message.startswith("targets=all-linear: LoRA on"))
    assert "experts: gate_up_proj x2, down_proj x2" in line and "router not adapted" in line

    # the merged checkpoint keeps one tensor per expert; exactly the experts training routed tokens to
    # (their share of B moved off zero) changed, in every layer; the router did not
    from edgetune.convert.lora_deltas import LoraDeltas
    deltas = LoraDeltas(run.adapter)
    base_w, merged_w = safetensors_of(moe_base), safetensors_of(run.merged)
    assert set(base_w) == set(merged_w)
    for layer in range(2):
        changed = set()
        for j in range(EXPERTS):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                name = f"model.layers.{layer}.mlp.experts.{j}.{proj}.weight"
                trained = bool(deltas.factors(name, tuple(base_w[name].shape))[1].any())
                assert trained == (not torch.equal(base_w[name], merged_w[name])), name
                changed |= {j} if trained else set()
        assert changed, f"layer {layer}: no expert trained"
        assert torch.equal(base_w[f"model.layers.{layer}.mlp.gate.weight"],
                           merged_w[f"model.layers.{layer}.mlp.gate.weight"])

    ids = prompt_ids(moe_base)
    merged = hf_logits(run.merged, ids)
    assert nmse(merged, hf_logits(moe_base, ids)) > 1e-4
    llm, ours = llama_logits(run.gguf("F16"), ids)
    llm.close()
    assert nmse(ours, merged) < 1e-4, f"merged F16 NMSE {nmse(ours, merged):.2e}"

    # the GGUF LoRA adapter holds stacked expert pairs, and llama.cpp applying it to the base is the merged model
    base_gguf = convert_hf_to_gguf(moe_base, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(run.adapter, moe_base, tmp_path / "lora.gguf", "f32")
    lora = gguf_tensors(lora_gguf)
    rank = r.train.rank
    for proj, (rows, cols) in {"gate": (32, 64), "up": (32, 64), "down": (64, 32)}.items():
        assert lora[f"blk.1.ffn_{proj}_exps.weight.lora_a"].shape == (EXPERTS, rank, cols)
        assert lora[f"blk.1.ffn_{proj}_exps.weight.lora_b"].shape == (EXPERTS, rows, rank)
    assert not any("ffn_gate_inp" in n for n in lora)
    with_lora = lora_logits(base_gguf, lora_gguf, ids)
    assert nmse(with_lora, merged) < 1e-4, f"LoRA adapter NMSE {nmse(with_lora, merged):.2e}"

    # the batch tool's single pass (base + deltas straight into the GGUF) writes the same tensors as merge + convert
    single = convert_merged(moe_base, run.adapter, tmp_path / "batch", "b", ["F16"])
    ours_b, two_pass = gguf_tensors(single[0]), gguf_tensors(run.gguf("F16"))
    assert set(ours_b) == set(two_pass)
    for name in two_pass:
        assert np.array_equal(ours_b[name], two_pass[name]), name

    for q in ("Q8_0", "Q4_K_M"):
        row = quick_check(run.gguf(q), max_tokens=8, threads=1)
        assert row["passed"] and (row["generated_tokens"] > 0 or row["stopped_at_eos"]), (q, row)


def random_expert_adapter(base, out, layout: str):
    """A PEFT adapter with random (non-zero) weights: "fused" adapts transformers 5's stacked expert
    parameters (target_parameters), "per-expert" is the transformers 4 layout of one linear layer
    per expert (what adapters trained before transformers 5 hold), on experts 0 and 2 only, with
    one of them at another rank."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    if layout == "fused":
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        params = [f"model.layers.{i}.mlp.experts.{p}" for i in range(2) for p in ("gate_up_proj", "down_proj")]
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=[],
                                                      target_parameters=params))
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_" in name:
                    p.normal_(std=0.1)
        peft_model.save_pretrained(str(out))
        return out
    out.mkdir(parents=True)
    tensors, pattern = {}, {"model.layers.1.mlp.experts.2.down_proj": 2}
    for layer in range(2):
        for j in (0, 2):
            for proj, (rows, cols) in {"gate_proj": (32, 64), "up_proj": (32, 64), "down_proj": (64, 32)}.items():
                module = f"model.layers.{layer}.mlp.experts.{j}.{proj}"
                r = pattern.get(module, 4)
                tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(r, cols) * 0.1
                tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(rows, r) * 0.1
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "rank_pattern": pattern, "alpha_pattern": {},
        "target_modules": ["gate_proj", "up_proj", "down_proj"], "base_model_name_or_path": str(base)}))
    return out


@pytest.mark.parametrize("layout", ["fused", "per-expert"])
def test_expert_adapters_of_either_layout_merge_and_apply_in_llama_cpp(moe_base, layout, tmp_path):
    adapter = random_expert_adapter(moe_base, tmp_path / "adapter", layout)
    merged_dir = merge(str(moe_base), adapter, tmp_path / "merged")
    ids = prompt_ids(moe_base)
    merged = hf_logits(merged_dir, ids)
    assert nmse(merged, hf_logits(moe_base, ids)) > 1e-3
    if layout == "fused":  # PEFT's own forward with the adapter is the reference for the expert layout
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(moe_base), dtype=torch.float32),
                                          str(adapter)).eval()
        with torch.no_grad():
            assert nmse([model(torch.tensor(ids)).logits[0].numpy()], merged) < 1e-10
    base_gguf = convert_hf_to_gguf(moe_base, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(adapter, moe_base, tmp_path / "lora.gguf", "f32")
    lora = gguf_tensors(lora_gguf)
    if layout == "per-expert":  # rank padded to the stack's largest, experts 1 and 3 all zeros
        b = lora["blk.1.ffn_down_exps.weight.lora_b"]
        assert b.shape == (EXPERTS, 64, 4) and not b[2, :, 2:].any() and b[2, :, :2].any()
        assert not b[1].any() and not b[3].any() and b[0].any()
    with_lora = lora_logits(base_gguf, lora_gguf, ids)
    assert nmse(with_lora, merged) < 1e-4, f"{layout}: LoRA adapter NMSE {nmse(with_lora, merged):.2e}"


def fused_copy(model_dir, dest):
    """The same model saved with transformers 5's in-memory names: fused 3-D expert tensors."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    shutil.copytree(model_dir, dest)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    for shard in dest.glob("*.safetensors"):
        shard.unlink()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "model.safetensors"))
    return dest


def test_fused_checkpoint_converts_to_the_same_gguf_and_merges_alike(moe_base, tmp_path):
    from edgetune.convert.lora_deltas import LoraDeltas
    fused = fused_copy(moe_base, tmp_path / "fused")
    names = set(safetensors_of(fused))
    assert "model.layers.0.mlp.experts.gate_up_proj" in names and not any(".experts.0." in n for n in names)
    per_expert = gguf_tensors(convert_hf_to_gguf(moe_base, tmp_path / "a.gguf", "f16"))
    from_fused = gguf_tensors(convert_hf_to_gguf(fused, tmp_path / "b.gguf", "f16"))
    assert set(per_expert) == set(from_fused) and "blk.0.ffn_gate_exps.weight" in per_expert
    for name in per_expert:
        assert np.array_equal(per_expert[name], from_fused[name]), name
    assert per_expert["blk.0.ffn_gate_inp.weight"].dtype == np.float32  # the router is never rounded

    # an adapter on the fused parameters adds, to the fused tensor, exactly what it adds to each expert's
    deltas = LoraDeltas(random_expert_adapter(moe_base, tmp_path / "adapter", "fused"))
    base_w, fused_w = safetensors_of(moe_base), safetensors_of(fused)
    gate_up = deltas.apply("model.layers.1.mlp.experts.gate_up_proj", fused_w["model.layers.1.mlp.experts.gate_up_proj"])
    down = deltas.apply("model.layers.1.mlp.experts.down_proj", fused_w["model.layers.1.mlp.experts.down_proj"])
    for j in range(EXPERTS):
        stem = f"model.layers.1.mlp.experts.{j}"
        pieces = [deltas.apply(f"{stem}.{p}.weight", base_w[f"{stem}.{p}.weight"]) for p in ("gate_proj", "up_proj")]
        torch.testing.assert_close(gate_up[j], torch.cat(pieces), rtol=0, atol=1e-6)
        torch.testing.assert_close(down[j], deltas.apply(f"{stem}.down_proj.weight", base_w[f"{stem}.down_proj.weight"]),
                                   rtol=0, atol=1e-6)
    assert not torch.equal(down, fused_w["model.layers.1.mlp.experts.down_proj"])


def _with_config(model_dir, dest, **changes):
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **changes}))
    return dest


def test_what_llama_cpp_cannot_run_fails_before_training(moe_base, demo_jsonl, tmp_path):
    cases = {"unnormalised": ({"norm_topk_prob": False}, "norm_topk_prob false: llama.cpp's qwen3moe always"),
             "dense": ({"decoder_sparse_step": 2}, "dense layers between the MoE ones .*experts in every layer"),
             "mlp-only": ({"mlp_only_layers": [1]}, r"mlp_only_layers \[1\]")}
    for name, (changes, message) in cases.items():
        odd = _with_config(moe_base, tmp_path / name, **changes)
        r = make_recipe(odd, demo_jsonl, tmp_path / f"runs-{name}")
        with pytest.raises(EdgetuneError, match=f"{odd}/config.json: .*{message}"):
            pipeline.run(r)
        run = RunFolder.of(r)
        assert not run.train_log.exists() and not run.adapter.exists()


def test_experts_option_is_checked(demo_jsonl, tmp_path, moe_base):
    from transformers import AutoModelForCausalLM

    from edgetune.steps.train.targets import describe, expert_parameters, resolve_experts, resolve_targets
    with pytest.raises(EdgetuneError, match=r"recipe: train.dropout 0.05 must be 0 with train.experts: true"):
        make_recipe(moe_base, demo_jsonl, tmp_path / "runs", train={"experts": True, "dropout": 0.05})
    model = AutoModelForCausalLM.from_pretrained(str(moe_base), dtype=torch.float32)
    assert expert_parameters(model) == [f"model.layers.{i}.mlp.experts.{p}" for i in range(2)
                                        for p in ("gate_up_proj", "down_proj")]
    assert resolve_experts(model, False) == []
    chosen = resolve_targets(model, "all-linear")
    assert not any(".mlp." in n for n in chosen)  # the router is not a linear layer to adapt
    assert describe(chosen, experts_left=4).endswith("experts not adapted (4 stacked expert weights; train.experts: true "
                                            "adds them)")
    dense = AutoModelForCausalLM.from_pretrained(str(build("llama", tmp_path / "llama")), dtype=torch.float32)
    with pytest.raises(EdgetuneError, match="train.experts: true, but this model has no mixture-of-experts layers"):
        resolve_experts(dense, True)


def test_missing_or_extra_experts_are_named(moe_base, tmp_path):
    from safetensors.torch import save_file
    weights = safetensors_of(moe_base)
    broken = tmp_path / "broken"
    shutil.copytree(moe_base, broken)
    for shard in broken.glob("*.safetensors"):
        shard.unlink()
    save_file({k: v for k, v in weights.items() if ".experts.3." not in k or ".layers.1." not in k},
              str(broken / "model.safetensors"))
    with pytest.raises(EdgetuneError, match=r"blk.1.ffn_\w+_exps.weight is missing experts \[3\]"):
        convert_hf_to_gguf(broken, tmp_path / "x.gguf", "f16")
    assert not (tmp_path / "x.gguf").exists()
    extra = weights["model.layers.0.mlp.experts.0.up_proj.weight"].clone()
    save_file({**weights, "model.layers.0.mlp.experts.4.up_proj.weight": extra}, str(broken / "model.safetensors"))
    with pytest.raises(EdgetuneError, match="expert 4 but num_experts is 4"):
        convert_hf_to_gguf(broken, tmp_path / "x.gguf", "f16")


def build_moe256(folder):
    """Qwen3-MoE with rows of 256 (hidden and expert width), so the IQ2 types apply to the experts."""
    import transformers as tf
    from transformers import AutoModelForCausalLM

    from arch_models import bpe_tokenizer
    tok = bpe_tokenizer("qwen2")
    torch.manual_seed(0)
    config = tf.Qwen3MoeConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=256,
                               num_experts=EXPERTS, num_experts_per_tok=2, moe_intermediate_size=256,
                               norm_topk_prob=True, initializer_range=0.1, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    return folder / "model"


def test_importance_matrix_covers_each_expert_as_llama_cpp_does(tmp_path):
    """Ours (torch hooks; the experts' down inputs recomputed per expert) vs llama.cpp's own forward
    pass (MUL_MAT_ID, each input column to the expert the router chose): one row per expert, the same
    tokens routed to each, the same statistics; IQ2 types, which llama.cpp refuses for a tensor the
    matrix lacks, then quantize the experts and the file answers."""
    from llama_cpp import Llama
    from llama_imatrix import llama_imatrix
    from quant_fixtures import token_rows

    from edgetune import imatrix as imatrix_mod
    from edgetune.steps.quantize.quantize import quantize
    model_dir = build_moe256(tmp_path)
    rows = token_rows(model_dir, repeat=1)
    ours = imatrix_mod.compute(model_dir, rows, "t")
    theirs = llama_imatrix(convert_hf_to_gguf(model_dir, tmp_path / "m-F32.gguf", "f32"), rows)
    # the router is a product too, but is never quantized (it stays F32), so it needs no entry
    assert set(ours.sums) == {n for n in theirs if "ffn_gate_inp" not in n}
    for layer in range(2):
        for proj in ("gate", "up", "down"):
            name = f"blk.{layer}.ffn_{proj}_exps.weight"
            sums, counts = theirs[name]
            assert ours.sums[name].shape == sums.shape == (EXPERTS, 256)
            # the same routing, but for the odd near-tie the two forward passes break differently
            assert ours.counts[name].sum() == counts.sum() == 2 * sum(len(r) for r in rows), name
            assert np.abs(ours.counts[name] - counts).max() <= 0.02 * counts.sum(), (name, ours.counts[name], counts)
            for e in np.flatnonzero(counts):
                r = np.corrcoef(ours.sums[name][e], sums[e])[0, 1]
                rel = np.linalg.norm(ours.sums[name][e] - sums[e]) / np.linalg.norm(sums[e])
                same_tokens = ours.counts[name][e] == counts[e]  # else a token or two of its own differ
                assert r >= 0.99 and (rel < 0.05 or not same_tokens), \
                    f"{name} expert {e}: correlation {r:.4f}, relative L2 {rel:.3f}"
    for name, (sums, count) in theirs.items():  # attention: one matrix, every token
        if "_exps" not in name and "ffn_gate_inp" not in name:
            assert ours.counts[name][0] == count and np.corrcoef(ours.sums[name][0], sums)[0, 1] >= 0.99, name

    path = imatrix_mod.write(ours, tmp_path / "m.imatrix.gguf")
    f16 = convert_hf_to_gguf(model_dir, tmp_path / "m-F16.gguf", "f16")
    out = quantize(f16, tmp_path / "m-IQ2_XS.gguf", "IQ2_XS", imatrix=path)
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out["path"]).tensors}
    assert kinds["blk.0.ffn_gate_exps.weight"].startswith("IQ2"), kinds
    llm = Llama(model_path=out["path"], n_ctx=64, verbose=False, n_threads=1)
    ids = llm.tokenize(b"the last word", add_bos=True)
    llm.eval(ids)
    assert np.isfinite(np.array(llm.scores[len(ids) - 1])).all()
    llm.close()


def test_expert_lora_that_fits_no_expert_weight_is_named(moe_base, tmp_path):
    """An expert LoRA pair whose shapes fit none of the base's experts (an adapter for another base)
    stops the merge, the single-pass batch merge and the GGUF export; it is never silently dropped."""
    from safetensors.torch import load_file, save_file

    from edgetune.use.batch import convert_merged
    adapter = random_expert_adapter(moe_base, tmp_path / "adapter", "fused")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in weights if ".layers.0.mlp.experts." in k and k.endswith("lora_A.weight")
               and weights[k].shape[1] == 64)  # gate_up's A: (experts x r, hidden)
    weights[key] = torch.randn(weights[key].shape[0], 48)
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    message = r"LoRA on model.layers.0.mlp.experts \(A\(16, 48\), B\(64, 16\)\) fits no expert weight of the base"
    with pytest.raises(EdgetuneError, match=message):
        merge(str(moe_base), adapter, tmp_path / "merged")
    with pytest.raises(EdgetuneError, match=message):
        convert_lora_to_gguf(adapter, moe_base, tmp_path / "lora.gguf")
    with pytest.raises(EdgetuneError, match=message):
        convert_merged(moe_base, adapter, tmp_path, "b", ["F16"])
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob("*.gguf"))
