"""A tiny Llama whose rows are 256 wide (K- and IQ-quants apply without fallbacks), its F16 file and
importance matrix, shared by the quantization, mixed-type and MoE tests."""
import pytest

from edgetune import imatrix as imatrix_mod
from edgetune.convert import convert_hf_to_gguf

from arch_models import bpe_tokenizer

TEXTS = ["the last word of red fox tiger is tiger and the first is red.",
         "Hello world, naive cafe, 1234567890 and new lines\n\nthat go on for a while longer.",
         "### Instruction:\nWhat is the last word of: blue cat lion\n\n### Response:\nlion"]


def build_llama256(folder):
    """A tiny random Llama whose rows are 256 wide, so K- and IQ-quants apply without fallbacks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_tokenizer("gpt-2")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.05, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config)
    out = folder / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama256(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama256")
    model_dir = build_llama256(folder)
    f16 = convert_hf_to_gguf(model_dir, folder / "m-F16.gguf", "f16")
    return model_dir, f16


def token_rows(model_dir, texts=TEXTS, repeat=4):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [tok(t)["input_ids"] for t in texts * repeat]


@pytest.fixture(scope="module")
def llama256_imatrix(llama256, tmp_path_factory):
    model_dir, _f16 = llama256
    im = imatrix_mod.compute(model_dir, token_rows(model_dir), "texts.jsonl")
    return imatrix_mod.write(im, tmp_path_factory.mktemp("im") / "m.imatrix.gguf")
