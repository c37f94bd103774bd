"""Batch conversion of several real PEFT adapters: both modes, manifest/resume, per-row errors, parity."""
import json
import shutil

import numpy as np
import pytest
import torch

from edgetune.convert import convert_hf_to_gguf
from edgetune.measure.metrics import nmse
from edgetune.steps.merge import merge
from edgetune.use.batch import run_batch

from arch_models import build
from convert_fixtures import make_adapter


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    qwen_base = build("qwen2", tmp_path_factory.mktemp("qwen"))
    make_adapter(tiny_base, root / "a-qv-r4", 4, ["q_proj", "v_proj"], 1)
    make_adapter(tiny_base, root / "b-all-r8", 8, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"], 2)
    make_adapter(tiny_base, root / "nested" / "c-rslora-r16", 16, ["k_proj", "o_proj"], 3, use_rslora=True)
    make_adapter(qwen_base, root / "d-qwen-r4", 4, ["q_proj", "k_proj", "v_proj"], 4)
    broken = make_adapter(tiny_base, root / "e-broken", 4, ["q_proj"], 5)
    (broken / "adapter_model.safetensors").unlink()
    return root, tiny_base, qwen_base


def test_batch_both_modes_resume_and_row_errors(adapters, tmp_path):
    root, _, _ = adapters
    out = tmp_path / "out"
    events = []
    rows = run_batch(root, out, ["Q8_0", "Q4_K_M"], "both", events.append)
    status = {r["name"]: r["status"] for r in rows}
    assert status == {"a-qv-r4": "ok", "b-all-r8": "ok", "nested-c-rslora-r16": "ok", "d-qwen-r4": "ok",
                      "e-broken": "failed"}
    broken = next(r for r in rows if r["name"] == "e-broken")
    assert "no adapter_model.safetensors" in broken["error"]
    for r in rows:
        if r["status"] == "ok":
            names = sorted(p.rsplit("/", 1)[-1] for p in r["files"])
            assert names == sorted([f"{r['name']}-Q8_0.gguf", f"{r['name']}-Q4_K_M.gguf", f"{r['name']}-lora-F16.gguf"])
            assert all(s["passed"] for s in r["smoke"])
    # one base GGUF per base, converted once, for the LoRA files
    assert len(list(out.glob("base-*-F16.gguf"))) == 2
    assert not list(out.glob("*-F16.gguf.part")) and not (out / "a-qv-r4-F16.gguf").exists()
    assert json.loads((out / "batch.json").read_text())[0]["name"] == "a-qv-r4"
    assert "| e-broken |" in (out / "batch.md").read_text()

    again = run_batch(root, out, ["Q8_0", "Q4_K_M"], "both")
    assert {r["name"]: r["status"] for r in again}["a-qv-r4"] == "skipped"
    assert sum(r["status"] == "skipped" for r in again) == 4


def test_streaming_merge_is_bit_identical_to_merge_then_convert(adapters, tmp_path):
    import gguf
    root, tiny_base, _ = adapters
    adapter = root / "b-all-r8"
    rows = run_batch([adapter], tmp_path / "stream", ["F32"], "merged", smoke=False)
    streamed = gguf.GGUFReader(rows[0]["files"][0])
    merged_dir = merge(str(tiny_base), adapter, tmp_path / "merged")
    two_step = gguf.GGUFReader(str(convert_hf_to_gguf(merged_dir, tmp_path / "two-step.gguf", "f32")))
    a = {t.name: np.array(t.data) for t in streamed.tensors}
    b = {t.name: np.array(t.data) for t in two_step.tensors}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("name", ["a-qv-r4", "nested/c-rslora-r16", "d-qwen-r4"])
def test_lora_gguf_in_llama_cpp_matches_the_merged_model(adapters, tmp_path, name):
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune.convert import convert_lora_to_gguf
    root, tiny_base, qwen_base = adapters
    adapter = root / name
    base = qwen_base if "qwen" in name else tiny_base
    base_gguf = convert_hf_to_gguf(base, tmp_path / "base.gguf", "f32")
    lora_gguf = convert_lora_to_gguf(adapter, base, tmp_path / "lora.gguf", "f32")
    merged = AutoModelForCausalLM.from_pretrained(str(merge(str(base), adapter, tmp_path / "m")), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(base))
    ids = tok("the last word of red fox tiger is tiger. Hello world!")["input_ids"]
    with torch.no_grad():
        ref = merged(torch.tensor([ids])).logits[0].numpy()
    llm = Llama(model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=128, logits_all=True, verbose=False,
                n_threads=1)
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    llm.close()
    assert nmse([ours], [ref]) < 1e-4


def test_adapter_errors_per_row(adapters, tmp_path):
    from safetensors.torch import load_file, save_file
    root, tiny_base, _ = adapters
    phi = build("phi3", tmp_path / "phi")
    wrong = make_adapter(phi, tmp_path / "wrong-base", 4, ["qkv_proj"], 7)
    config = json.loads((wrong / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_base)  # a Phi-3 adapter on the Llama base
    (wrong / "adapter_config.json").write_text(json.dumps(config))
    shape = tmp_path / "shape"
    shutil.copytree(root / "a-qv-r4", shape)
    tensors = load_file(str(shape / "adapter_model.safetensors"))
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(4, 60)
    save_file(tensors, str(shape / "adapter_model.safetensors"))
    emb = make_adapter(tiny_base, tmp_path / "emb", 4, ["embed_tokens", "q_proj"], 9)
    rows = run_batch([wrong, shape, emb], tmp_path / "out", ["Q8_0"], "lora", smoke=False)
    by_name = {r["name"]: r for r in rows}
    assert by_name["wrong-base"]["status"] == "failed"
    assert "no base weight" in by_name["wrong-base"]["error"]
    assert by_name["shape"]["status"] == "failed" and "do not fit the base weight" in by_name["shape"]["error"]
    assert by_name["emb"]["status"] == "failed" and "embed_tokens (an embedding) is not supported" in by_name["emb"]["error"]
    rows = run_batch([emb, shape], tmp_path / "out2", ["Q8_0"], "merged", smoke=False)
    assert rows[0]["status"] == "ok"  # the merged mode handles embedding LoRA
    assert rows[1]["status"] == "failed" and "does not match the base weight" in rows[1]["error"]


def test_every_folder_with_adapter_files_gets_a_row(adapters, tmp_path):
    """Weights without adapter_config.json were left out silently ('1 adapters'): each such folder
    has a row that says what it lacks, and the batch still converts the good ones."""
    from edgetune.use.batch import adapter_problem, find_adapters
    root, _, _ = adapters
    mine = tmp_path / "adapters"
    shutil.copytree(root / "a-qv-r4", mine / "good")
    (mine / "weights-only").mkdir()
    shutil.copy(root / "a-qv-r4" / "adapter_model.safetensors", mine / "weights-only")
    assert [p.name for p in find_adapters(mine)] == ["good", "weights-only"]
    assert "adapter_model.safetensors without adapter_config.json" in adapter_problem(mine / "weights-only")
    events = []
    rows = run_batch(mine, tmp_path / "out", ["Q8_0"], "merged", events.append, smoke=False)
    assert {r["name"]: r["status"] for r in rows} == {"good": "ok", "weights-only": "failed"}
    assert "without adapter_config.json" in rows[1]["error"]
    assert events[0].message.startswith("2 adapters")
    assert "| weights-only |" in (tmp_path / "out" / "batch.md").read_text()
