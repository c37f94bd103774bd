"""Gemma 4 beyond the family end-to-end test (test_families.py): the multimodal checkpoint's text
model, what all-linear adapts, the streaming batch merge and GGUF LoRA adapters on its layouts,
and the settings that must stop a run before training."""
import json
import shutil

import numpy as np
import pytest
import torch

from edgetune import pipeline
from edgetune.convert import convert_hf_to_gguf, convert_lora_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.measure.metrics import nmse
from edgetune.runs import RunFolder
from edgetune.steps.merge import merge
from edgetune.use.batch import run_batch

from arch_models import build
from conftest import make_recipe
from convert_fixtures import gguf_tensors, hf_logits, llama_logits, make_adapter

PROMPTS = ["the last word of red fox tiger is tiger. Hello world 🙂 1234 naïve", "Hello world"]


@pytest.fixture(scope="module")
def gemma4(tmp_path_factory):
    return build("gemma4", tmp_path_factory.mktemp("gemma4"))


@pytest.fixture(scope="module")
def gemma4_mm(tmp_path_factory):
    return build("gemma4-mm", tmp_path_factory.mktemp("gemma4-mm"))


def _ids(model_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    assert len(ids[0]) > 16  # past the sliding window of 8, so sliding vs full layers differ
    return ids


def test_per_layer_embeddings_kv_sharing_and_proportional_rope_match_hf(gemma4, tmp_path):
    ids = _ids(gemma4)
    path = convert_hf_to_gguf(gemma4, tmp_path / "g.gguf", "f16")
    tensors = gguf_tensors(path)
    assert {"per_layer_token_embd.weight", "per_layer_model_proj.weight", "per_layer_proj_norm.weight",
            "blk.0.inp_gate.weight", "blk.0.proj.weight", "blk.0.post_norm.weight",
            "blk.0.layer_output_scale.weight", "rope_freqs.weight"} <= set(tensors)
    assert "blk.3.attn_k.weight" not in tensors  # a KV-shared layer
    assert list(tensors["rope_freqs.weight"].data[:5]) == list(np.float32([1, 1, 1, 1, 1e30]))  # 0.25 of 32 dims / 2
    llm, ours = llama_logits(path, ids)
    llm.close()
    ref = hf_logits(gemma4, ids)
    assert float(np.mean([r.std() for r in ref])) > 0.1
    assert nmse(ours, ref) < 1e-4, f"gemma4 F16 NMSE {nmse(ours, ref):.2e}"


def test_multimodal_checkpoint_converts_its_text_model_and_names_what_it_left_out(gemma4_mm, tmp_path):
    events = []
    path = convert_hf_to_gguf(gemma4_mm, tmp_path / "mm.gguf", "f16", on_event=events.append)
    left = next(e for e in events if e.kind == "log" and "left out" in e.message)
    assert set(left.data["left_out"]) == {"vision tower", "audio tower", "vision embedder", "audio embedder"}
    assert "text model only" in left.message and "the audio tower (" in left.message
    assert not any("vision" in n or "audio" in n for n in gguf_tensors(path))
    assert "blk.2.attn_v.weight" not in gguf_tensors(path)  # attention_k_eq_v: full layers reuse the keys
    ids = _ids(gemma4_mm)
    llm, ours = llama_logits(path, ids)
    llm.close()
    ref = hf_logits(gemma4_mm, ids)  # Gemma4ForConditionalGeneration on text
    assert nmse(ours, ref) < 1e-4, f"gemma4-mm F16 NMSE {nmse(ours, ref):.2e}"


def test_all_linear_adapts_the_per_layer_gates_not_the_input_projection_nor_the_towers(gemma4, gemma4_mm):
    from transformers import AutoModelForCausalLM

    from edgetune.steps.train.targets import resolve_targets
    model = AutoModelForCausalLM.from_pretrained(str(gemma4), dtype=torch.float32)
    chosen = resolve_targets(model, "all-linear")
    assert any(n.endswith("layers.0.per_layer_input_gate") for n in chosen)
    assert any(n.endswith("layers.5.per_layer_projection") for n in chosen)
    assert not any("per_layer_model_projection" in n for n in chosen)
    # named, it is adapted (merged mode)
    assert resolve_targets(model, "per_layer_model_projection") == ["model.per_layer_model_projection"]
    mm = AutoModelForCausalLM.from_pretrained(str(gemma4_mm), dtype=torch.float32)
    chosen = resolve_targets(mm, "all-linear")
    assert chosen and all(".language_model.layers." in n for n in chosen)
    assert not any(n.endswith("layers.2.self_attn.v_proj") for n in chosen)  # k_eq_v: no v_proj there


def test_batch_streaming_merge_and_lora_adapter_on_gemma4(gemma4, tmp_path):
    """The single-pass batch merge equals merge-then-convert bit for bit, and the GGUF LoRA adapter
    (per-layer gates and projections included) applied by llama.cpp is the merged model."""
    import gguf
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    from edgetune.steps.train.targets import resolve_targets
    targets = resolve_targets(AutoModelForCausalLM.from_pretrained(str(gemma4)), "all-linear")
    adapter = make_adapter(gemma4, tmp_path / "adapters" / "g4-all", 4, targets, 7)
    rows = run_batch([adapter], tmp_path / "stream", ["F32", "Q4_K_M"], "merged")
    assert rows[0]["status"] == "ok" and all(s["passed"] for s in rows[0]["smoke"]), rows[0]
    merged_dir = merge(str(gemma4), adapter, tmp_path / "merged")
    two_step = gguf.GGUFReader(str(convert_hf_to_gguf(merged_dir, tmp_path / "two-step.gguf", "f32")))
    streamed = gguf.GGUFReader(next(f for f in rows[0]["files"] if f.endswith("-F32.gguf")))
    a = {t.name: np.array(t.data) for t in streamed.tensors}
    b = {t.name: np.array(t.data) for t in two_step.tensors}
    assert a.keys() == b.keys() and all(a[n].tobytes() == b[n].tobytes() for n in a)

    ids = _ids(gemma4)[0]
    merged = hf_logits(merged_dir, [ids])
    assert nmse(merged, hf_logits(gemma4, [ids])) > 1e-4  # the adapter changes the model
    base_gguf = convert_hf_to_gguf(gemma4, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(adapter, gemma4, tmp_path / "lora.gguf", "f32")
    assert "blk.0.inp_gate.weight.lora_a" in gguf_tensors(lora_gguf)
    llm = Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=128, logits_all=True, verbose=False,
                n_threads=1)
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    assert nmse([ours], merged) < 1e-4, f"LoRA adapter NMSE {nmse([ours], merged):.2e}"


def test_lora_adapter_on_the_multimodal_text_model(gemma4_mm, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    from edgetune.steps.train.targets import resolve_targets
    targets = resolve_targets(AutoModelForCausalLM.from_pretrained(str(gemma4_mm)), "all-linear")
    adapter = make_adapter(gemma4_mm, tmp_path / "mm-all", 4, targets, 8)
    ids = _ids(gemma4_mm)[0]
    merged = hf_logits(merge(str(gemma4_mm), adapter, tmp_path / "merged"), [ids])
    base_gguf = convert_hf_to_gguf(gemma4_mm, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(adapter, gemma4_mm, tmp_path / "lora.gguf", "f32")
    llm = Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=128, logits_all=True, verbose=False,
                n_threads=1)
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    assert nmse([ours], merged) < 1e-4, f"LoRA adapter NMSE {nmse([ours], merged):.2e}"


def test_lora_adapter_on_the_per_layer_input_projection_is_refused(gemma4, tmp_path):
    """llama.cpp multiplies per_layer_model_proj without its LoRA hook: a GGUF adapter there would
    be silently ignored, so export refuses it and points at the merged mode."""
    adapter = make_adapter(gemma4, tmp_path / "ple-proj", 4, ["model.per_layer_model_projection"], 9)
    with pytest.raises(EdgetuneError, match="per_layer_model_projection.* no LoRA adapter .* merged mode"):
        convert_lora_to_gguf(adapter, gemma4, tmp_path / "lora.gguf", "f32")
    assert not (tmp_path / "lora.gguf").exists()


def _with_config(model_dir, dest, **changes):
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **changes}))
    return dest


@pytest.mark.parametrize("changes,message", [
    ({"enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32},
     "enable_moe_block: the Gemma 4 mixture-of-experts block .* is not supported"),
    ({"num_kv_shared_layers": 2}, r"num_kv_shared_layers 2: llama.cpp's gemma4 needs the last two unshared layers "
                                  r"\(2, 3\) to be sliding then full"),
    ({"use_bidirectional_attention": "all"}, "use_bidirectional_attention 'all'"),
    ({"attention_bias": True}, "attention_bias: llama.cpp's gemma4 has no attention biases"),
    ({"vocab_size_per_layer_input": 262144}, "vocab_size_per_layer_input 262144 differs from vocab_size"),
])
def test_settings_llama_cpp_cannot_run_fail_before_training(gemma4, demo_jsonl, tmp_path, changes, message):
    bad = _with_config(gemma4, tmp_path / "bad", **changes)
    r = make_recipe(bad, demo_jsonl, tmp_path / "runs")
    with pytest.raises(EdgetuneError, match=f"{bad}/config.json: {message}"):
        pipeline.run(r)
    run = RunFolder.of(r)
    assert not run.train_log.exists() and not run.adapter.exists()


def test_proportional_rope_factor_scales_the_full_layers_only(gemma4, tmp_path):
    config = json.loads((gemma4 / "config.json").read_text())
    rope = config["rope_parameters"]
    scaled = _with_config(gemma4, tmp_path / "scaled", rope_parameters={
        **rope, "full_attention": {**rope["full_attention"], "factor": 8.0}})
    ids = _ids(scaled)
    ref = hf_logits(scaled, ids)
    assert nmse(ref, hf_logits(gemma4, ids)) > 1e-4  # the factor shows in the logits
    llm, ours = llama_logits(convert_hf_to_gguf(scaled, tmp_path / "s.gguf", "f32"), ids)
    llm.close()
    assert nmse(ours, ref) < 1e-5, f"NMSE {nmse(ours, ref):.2e}"


# Gemma 4 E2B's published text settings (35 layers, 4 sliding : 1 full, the last 20 layers KV-shared)
E2B_TEXT = {"hidden_size": 1536, "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 1,
            "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": None, "attention_k_eq_v": False,
            "sliding_window": 512, "vocab_size": 262144, "vocab_size_per_layer_input": 262144,
            "hidden_size_per_layer_input": 256, "num_kv_shared_layers": 20, "use_double_wide_mlp": True,
            "intermediate_size": 6144, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": 30.0, "tie_word_embeddings": True,
            "layer_types": (["sliding_attention"] * 4 + ["full_attention"]) * 7,
            "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                                                   "rope_type": "proportional"},
                                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}}}


def test_e2b_shaped_config_gives_llama_cpp_its_hparams():
    """A full-size config (no weights): what llama.cpp's gemma4 loader reads, per layer where it varies."""
    import gguf

    from edgetune.convert.arch import ARCHITECTURES
    arch = ARCHITECTURES["Gemma4ForConditionalGeneration"](E2B_TEXT, "e2b")
    w = gguf.GGUFWriter(None, "gemma4")
    arch.add_hparams(w)
    kv = {k: v.value for k, v in w.kv_data[0].items()}
    assert kv["gemma4.feed_forward_length"] == [6144] * 15 + [12288] * 20  # double-wide in the shared layers
    assert kv["gemma4.attention.head_count_kv"] == 1
    assert (kv["gemma4.attention.key_length"], kv["gemma4.attention.key_length_swa"]) == (512, 256)
    assert (kv["gemma4.rope.dimension_count"], kv["gemma4.rope.dimension_count_swa"]) == (512, 256)
    assert (kv["gemma4.rope.freq_base"], kv["gemma4.rope.freq_base_swa"]) == (1e6, 1e4)
    assert kv["gemma4.attention.shared_kv_layers"] == 20 and kv["gemma4.embedding_length_per_layer_input"] == 256
    assert kv["gemma4.attention.sliding_window_pattern"] == [t == "sliding_attention" for t in E2B_TEXT["layer_types"]]
    assert kv["gemma4.final_logit_softcapping"] == 30.0
    freqs = arch.extra_tensors()["rope_freqs.weight"]
    assert freqs.shape == (256,) and (freqs[:64] == 1).all() and (freqs[64:] == np.float32(1e30)).all()
    assert arch.tied_embeddings
