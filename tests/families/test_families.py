"""Every model family end to end on a tiny model of its real config class: a few LoRA steps on all
linear layers, merge, convert, quantize, and llama.cpp as the judge (merged F16 logits, the GGUF
LoRA adapter applied to the base, Q8_0 and Q4_K_M load and answer). Logits at every outtype,
token ids, EOS and the chat template are checked per family in test_convert.py."""
import numpy as np
import pytest
import torch

from edgetune import pipeline
from edgetune.convert import convert_hf_to_gguf, convert_lora_to_gguf
from edgetune.measure.metrics import nmse
from edgetune.runs import RunFolder
from edgetune.steps.smoke import quick_check

from arch_models import build
from conftest import make_recipe
from convert_fixtures import hf_logits, llama_logits

# family -> the linear layers of its decoder (what all-linear must adapt, fused ones included)
FAMILIES = {
    "llama3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "smollm2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "mistral": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2.5": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gemma2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gemma3-mm": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
    "mistral3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "smollm3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "granite": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "olmo2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "phi4-mini": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
    "olmo3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "mistral3-mm": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    # 2 delta-net layers (in/out projections, the a/b gates) and 2 full-attention ones
    "qwen35": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj_qkv",
               "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"},
    "qwen35-mm": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "in_proj_qkv",
                  "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"},
    # per-layer embedding gate and projection too; never per_layer_model_projection (see targets.py)
    "gemma4": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "per_layer_input_gate",
               "per_layer_projection"},
    "gemma4-mm": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    # the experts are 3-D parameters and the router is not adapted: all-linear is attention (train.experts adds them)
    "qwen3moe": {"q_proj", "k_proj", "v_proj", "o_proj"},
}
# families whose layer count or layout is not 2 layers of every module: how many modules all-linear adapts
ADAPTED = {"smollm3": 7 * 4,
           "qwen35": 2 * (5 + 3) + 2 * (4 + 3), "qwen35-mm": 2 * (5 + 3) + 2 * (4 + 3),  # 2 delta-net + 2 full-attention layers
           "gemma4": 7 * 6 + 2 * 3,  # 6 layers; the 3 KV-shared ones have no k_proj/v_proj
           "gemma4-mm": 7 * 3 - 1}  # 3 layers; the full one has no v_proj (attention_k_eq_v)
PROMPT = "the last word of red fox tiger is tiger. Hello world 🙂 1234"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_merges_converts_and_runs(family, demo_jsonl, tmp_path):
    from transformers import AutoTokenizer

    base = build(family, tmp_path / "base")
    r = make_recipe(base, demo_jsonl, tmp_path / "runs", data={"eval_split": 0.0},
                    train={"max_steps": 3, "targets": "all-linear", "lr": 5e-2})
    events = []
    pipeline.run(r, events.append, until="quantize")
    run = RunFolder.of(r)

    # all-linear adapted every linear layer of the decoder, fused ones too, and the log says which
    adapted = next(e.data["targets"] for e in events if e.kind == "log" and e.data and "targets" in e.data)
    assert {n.rsplit(".", 1)[-1] for n in adapted} == FAMILIES[family]
    assert len(adapted) == ADAPTED.get(family, len(FAMILIES[family]) * 2)
    line = next(e.message for e in events if e.kind == "log" and e.message.startswith("targets=all-linear: LoRA on"))
    assert ("left out: per_layer_model_projection (Gemma 4's" in line) == (family == "gemma4"), line

    tok = AutoTokenizer.from_pretrained(str(base))
    ids = [tok(PROMPT)["input_ids"]]
    merged = hf_logits(run.merged, ids)
    assert nmse(merged, hf_logits(base, ids)) > 1e-4  # the adapter changed the model

    llm, ours = llama_logits(run.gguf("F16"), ids)
    llm.close()
    assert nmse(ours, merged) < 1e-4, f"{family}: merged F16 NMSE {nmse(ours, merged):.2e}"

    # the GGUF LoRA adapter, applied by llama.cpp to the base GGUF, is the merged model
    base_gguf = convert_hf_to_gguf(base, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(run.adapter, base, tmp_path / "lora.gguf", "f32")
    from llama_cpp import Llama
    llm = Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=256, logits_all=True, verbose=False,
                n_threads=1)
    llm.eval(ids[0])
    with_lora = np.array(llm.scores[: len(ids[0])], dtype=np.float32)
    llm.close()
    assert nmse([with_lora], merged) < 1e-4, f"{family}: LoRA adapter NMSE {nmse([with_lora], merged):.2e}"

    for q in ("Q8_0", "Q4_K_M"):
        row = quick_check(run.gguf(q), max_tokens=8, threads=1)
        # loads, finite logits, greedy generation ends (a few steps at a high rate may teach EOS first)
        assert row["passed"] and (row["generated_tokens"] > 0 or row["stopped_at_eos"]), (q, row)


def test_phi3_long_factors_past_the_original_context(tmp_path):
    """llama.cpp switches to rope_factors_long when its context exceeds the original one; HF when
    the sequence does. A prompt longer than the original context, in a context that is too."""
    from transformers import AutoTokenizer
    model_dir = build("phi3", tmp_path / "phi3")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(" ".join(["Hello world 🙂 1234 naïve new  lines"] * 40))["input_ids"][:300]
    assert len(ids) == 300
    llm, ours = llama_logits(convert_hf_to_gguf(model_dir, tmp_path / "p.gguf", "f32"), [ids], n_ctx=512)
    llm.close()
    assert nmse(ours, hf_logits(model_dir, [ids])) < 1e-5


def test_all_linear_leaves_out_the_head_and_the_vision_tower(tmp_path):
    from transformers import AutoModelForCausalLM

    from edgetune.errors import EdgetuneError
    from edgetune.steps.train.targets import resolve_targets
    model = AutoModelForCausalLM.from_pretrained(str(build("gemma3-mm", tmp_path / "g")), dtype=torch.float32)
    every_linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = resolve_targets(model, "all-linear")
    assert any("vision" in n for n in every_linear) and not any("vision" in n or "projector" in n for n in chosen)
    assert all(".language_model.layers." in n for n in chosen) and len(chosen) == 2 * 7
    assert resolve_targets(model, "qv") == sorted(n for n in chosen if n.endswith(("q_proj", "v_proj")))
    phi = AutoModelForCausalLM.from_pretrained(str(build("phi3", tmp_path / "p")), dtype=torch.float32)
    assert {n.rsplit(".", 1)[-1] for n in resolve_targets(phi, "qv")} == {"qkv_proj"}
    assert {n.rsplit(".", 1)[-1] for n in resolve_targets(phi, "attn")} == {"qkv_proj", "o_proj"}
    with pytest.raises(EdgetuneError, match="q_proj not in this model's decoder .*qkv_proj"):
        resolve_targets(phi, "q_proj,o_proj")


def _with_config(model_dir, dest, **changes):
    import json
    import shutil
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **changes}))
    return dest


def test_unconvertible_base_fails_before_training(demo_jsonl, tmp_path):
    """An architecture we do not convert, or a setting llama.cpp cannot express, stops `edgetune run`
    before training starts, naming the architecture and listing the supported ones."""
    from edgetune.errors import EdgetuneError
    base = build("llama", tmp_path / "llama")
    neox = _with_config(base, tmp_path / "neox", architectures=["GPTNeoXForCausalLM"])
    r = make_recipe(neox, demo_jsonl, tmp_path / "runs")
    with pytest.raises(EdgetuneError, match=r"architecture 'GPTNeoXForCausalLM' is not supported: .*"
                                            r"LlamaForCausalLM \(llama\).*Phi3ForCausalLM \(phi3\)"):
        pipeline.run(r)
    run = RunFolder.of(r)
    assert not run.train_log.exists() and not list(run.dir.glob("checkpoints/checkpoint-*"))
    assert not run.adapter.exists()

    smol = build("smollm3", tmp_path / "smol")
    odd = _with_config(smol, tmp_path / "odd-nope", no_rope_layers=[1, 0, 1, 1])
    with pytest.raises(EdgetuneError, match="no_rope_layers .* not llama.cpp's fixed pattern"):
        pipeline.run(make_recipe(odd, demo_jsonl, tmp_path / "runs2"))
    phi = build("phi3", tmp_path / "phi")
    import json
    config = json.loads((phi / "config.json").read_text())
    dynamic = _with_config(phi, tmp_path / "dyn", rope_parameters={**config["rope_parameters"], "rope_type": "dynamic"})
    with pytest.raises(EdgetuneError, match="rope scaling 'dynamic' is not supported for phi3"):
        pipeline.run(make_recipe(dynamic, demo_jsonl, tmp_path / "runs3"))


def test_wizard_base_step_refuses_an_unconvertible_architecture(tmp_path):
    import asyncio

    from edgetune.tui.app import EdgetuneApp

    from tui_fixtures import FakeRunner, wait_until
    neox = _with_config(build("llama", tmp_path / "llama"), tmp_path / "neox", architectures=["GPTNeoXForCausalLM"])

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(120, 40)) as pilot:
            from edgetune.tui.screens.base_model import BaseModelScreen
            await app.push_screen(BaseModelScreen())
            await pilot.pause()
            app.screen.query_one("#kind-folder").value = True
            app.screen.query_one("#path").value = str(neox)
            await pilot.click("#next")
            error = app.screen.query_one("#error")
            await wait_until(pilot, lambda: "GPTNeoXForCausalLM" in str(error.render()))
            assert "is not supported" in str(error.render()) and isinstance(app.screen, BaseModelScreen)
    asyncio.run(go())


def test_mistral3_multimodal_adapts_and_converts_only_its_text_model(tmp_path):
    """Mistral3ForConditionalGeneration (Ministral 3, Mistral Small 3.x): transformers maps it to no
    causal LM, so edgetune loads the whole model, adapts only the text decoder's linears, and the
    converter writes the text model alone as llama.cpp's mistral3, saying what it left out."""
    import gguf
    from transformers import AutoModelForCausalLM

    from edgetune.inputs.models import load_causal_lm
    from edgetune.steps.train.targets import resolve_targets
    model_dir = build("mistral3-mm", tmp_path / "m")
    with pytest.raises(ValueError, match="Mistral3Config"):
        AutoModelForCausalLM.from_pretrained(str(model_dir))
    model = load_causal_lm(model_dir, dtype=torch.float32)
    assert type(model).__name__ == "Mistral3ForConditionalGeneration"
    every_linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    chosen = resolve_targets(model, "all-linear")
    assert any("vision_tower" in n for n in every_linear) and any("multi_modal_projector" in n for n in every_linear)
    assert all(".language_model.layers." in n for n in chosen) and len(chosen) == 2 * 7

    events = []
    path = convert_hf_to_gguf(model_dir, tmp_path / "m.gguf", "f16", on_event=events.append)
    left_out = next(e.data["left_out"] for e in events if e.data and "left_out" in e.data)
    assert set(left_out) == {"vision tower", "multimodal projector"} and all(n > 0 for n in left_out.values())
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "mistral3"
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and all(n.startswith(("blk.", "token_embd", "output_norm")) for n in names)
