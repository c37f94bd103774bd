"""Our HF -> GGUF converter, judged by llama.cpp: logits, token ids, EOS and chat template."""
import numpy as np
import pytest
import torch

from arch_models import build
from edgetune.convert import convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.smoke import PARITY_STRINGS, nmse

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3"]
PROMPTS = ["the last word of red fox tiger is tiger.", "Hello world 🙂 1234 naïve\n\nnew  lines"]


@pytest.fixture(scope="module", params=ARCHS)
def tiny_model(request, tmp_path_factory):
    return request.param, build(request.param, tmp_path_factory.mktemp(request.param))


def llama_logits(path, token_lists):
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=1)
    out = []
    for ids in token_lists:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    return llm, out


def hf_logits(model_dir, token_lists):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].numpy() for ids in token_lists]


@pytest.mark.parametrize("outtype,limit", [("f16", 1e-4), ("f32", 1e-6), ("q8_0", 5e-3)])
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
