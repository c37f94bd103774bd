"""Task-aware quantization: the file-type registry, the importance matrix from training rows (judged
against llama.cpp's own forward pass), quantizing with it (IQ types), and KL divergence."""
import gguf
import numpy as np
import pytest

from arch_models import bpe_tokenizer, build
from edgetune import imatrix as imatrix_mod
from edgetune import kld
from edgetune.convert import convert_hf_to_gguf
from edgetune.convert.filetypes import DIRECT_TYPES, FILE_TYPES, by_ftype, file_type
from edgetune.errors import EdgetuneError
from edgetune.quantize import predicted_size, quantize
from llama_imatrix import llama_imatrix

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


# ---------------------------------------------------------------- registry

def test_registry_is_built_on_gguf_ids():
    assert int(file_type("q4_k_m").ftype) == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert int(file_type("F32").ftype) == int(gguf.LlamaFileType.ALL_F32)
    for name, t in FILE_TYPES.items():
        assert by_ftype(int(t.ftype)) is t and by_ftype(str(int(t.ftype))) is t  # llama.cpp metadata is text
        assert t.needs_imatrix == name.startswith("IQ")
    assert set(DIRECT_TYPES) == {"F32", "F16", "BF16", "Q8_0"}
    assert DIRECT_TYPES["Q8_0"].direct == gguf.GGMLQuantizationType.Q8_0
    with pytest.raises(EdgetuneError, match="'Q9_X' is not one of F32, F16"):
        file_type("Q9_X")


def test_recipe_and_batch_read_the_registry(tmp_path):
    from edgetune.batch import run_batch
    from edgetune.recipe import from_dict
    assert from_dict({"export": {"quants": ["iq4_xs", "q4_0"]}}).export.quants == ["IQ4_XS", "Q4_0"]
    with pytest.raises(EdgetuneError, match="export.outtype 'q4_0' is not one of f32, f16, bf16, q8_0"):
        from_dict({"export": {"outtype": "q4_0"}})
    with pytest.raises(EdgetuneError, match="IQ3_M needs an importance matrix"):
        run_batch(tmp_path, tmp_path / "out", ["IQ3_M"])


# ---------------------------------------------------------------- importance matrix

@pytest.mark.parametrize("arch", ["llama256", "gemma3", "phi3"])
def test_imatrix_matches_llama_cpp_forward_pass(arch, tmp_path):
    """Ours (torch hooks on the HF model) vs llama.cpp's (graph callback on the F16 GGUF): the same
    tensors, the same token counts, per-tensor correlation >= 0.99. Phi-3 has fused qkv and gate_up."""
    model_dir = build_llama256(tmp_path) if arch == "llama256" else build(arch, tmp_path)
    f16 = convert_hf_to_gguf(model_dir, tmp_path / "m-F16.gguf", "f16")
    rows = token_rows(model_dir, repeat=1)
    ours = imatrix_mod.compute(model_dir, rows, "t")
    theirs = llama_imatrix(f16, rows)
    assert set(ours.sums) == set(theirs) and len(theirs) >= 4 * 2  # phi3: qkv, o, gate_up, down
    for name, (sums, count) in theirs.items():
        assert ours.counts[name][0] == count == sum(len(r) for r in rows), name
        r = np.corrcoef(ours.sums[name][0], sums)[0, 1]
        assert r >= 0.99, f"{name}: correlation {r:.4f}"
        assert np.allclose(ours.sums[name][0], sums, rtol=0.05, atol=1e-3 * sums.max()), name


def test_imatrix_file_round_trips(llama256_imatrix):
    im = imatrix_mod.read(llama256_imatrix)
    reader = gguf.GGUFReader(str(llama256_imatrix))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in reader.fields
    assert im.datasets == ["texts.jsonl"] and im.chunk_size == 512 and im.chunk_count == -(-im.tokens // 512) == 2
    name = "blk.0.attn_q.weight"
    sums = next(t for t in reader.tensors if t.name == f"{name}.in_sum2")
    assert list(sums.shape) == [256, 1]  # ne0 = input columns, ne1 = matrices, as llama-imatrix writes it
    assert im.sums[name].shape == (1, 256) and im.counts[name][0] == im.tokens > 0
    assert (im.mean_squares()[name] > 0).all()


def test_quantize_with_imatrix_records_it_and_iq_types_load(llama256, llama256_imatrix, tmp_path):
    from llama_cpp import Llama
    _model_dir, f16 = llama256
    for q in ("IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_XXS", "IQ2_M", "IQ2_XS"):
        out = tmp_path / f"m-{q}.gguf"
        info = quantize(f16, out, q, imatrix=llama256_imatrix)
        reader = gguf.GGUFReader(str(out))
        fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith("quantize.imatrix")}
        assert fields == {"quantize.imatrix.file": "m.imatrix.gguf", "quantize.imatrix.dataset": "texts.jsonl",
                          "quantize.imatrix.entries_count": 14, "quantize.imatrix.chunks_count": 2}, q
        kinds = {t.tensor_type.name for t in reader.tensors}
        assert any(k.startswith("IQ") for k in kinds), (q, kinds)
        assert info["bits_per_weight"] < 5
        llm = Llama(model_path=str(out), n_ctx=64, verbose=False)
        ids = llm.tokenize(b"the last word", add_bos=True)
        llm.eval(ids)
        assert np.isfinite(np.array(llm.scores[len(ids) - 1])).all()
        llm.close()


def test_iq_type_without_imatrix_is_refused_before_quantizing(llama256, tmp_path):
    _model_dir, f16 = llama256
    with pytest.raises(EdgetuneError, match="IQ2_M needs an importance matrix"):
        quantize(f16, tmp_path / "m-IQ2_M.gguf", "IQ2_M")
    assert list(tmp_path.iterdir()) == []


def test_failed_quantize_leaves_no_file(llama256, llama256_imatrix, tmp_path):
    _model_dir, f16 = llama256
    q8 = quantize(f16, tmp_path / "m-Q8_0.gguf", "Q8_0")["path"]
    with pytest.raises(EdgetuneError, match="could not quantize"):
        quantize(q8, tmp_path / "m-IQ4_NL.gguf", "IQ4_NL", imatrix=llama256_imatrix)  # requantizing is refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-Q8_0.gguf"]


def test_dry_run_predicts_sizes_and_embedding_type_is_the_lever(llama256, tmp_path):
    _model_dir, f16 = llama256
    for q, emb in (("Q4_K_M", None), ("Q4_K_M", "Q4_0"), ("Q8_0", None)):
        predicted = predicted_size(f16, q, token_embedding_type=emb, output_tensor_type=emb)
        actual = quantize(f16, tmp_path / f"m-{q}-{emb}.gguf", q, token_embedding_type=emb,
                          output_tensor_type=emb)["bytes"]
        assert abs(predicted - actual) < 0.02 * actual + 20_000, (q, emb, predicted, actual)
    assert list(tmp_path.glob("*Q4_K_M-Q4_0*"))[0].stat().st_size < list(tmp_path.glob("*Q4_K_M-None*"))[0].stat().st_size
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m-Q4_K_M-Q4_0.gguf")).tensors}
    assert types["token_embd.weight"] == "Q4_0" and types["output.weight"] == "Q4_0"
    with pytest.raises(EdgetuneError, match="token_embedding_type: 'Q9' is not a ggml tensor type"):
        predicted_size(f16, "Q4_0", token_embedding_type="Q9")


# ---------------------------------------------------------------- KL divergence

def test_kld_of_a_file_against_itself_is_zero_and_quantized_is_not(llama256, tmp_path):
    from transformers import AutoTokenizer

    from edgetune.data import Example
    model_dir, f16 = llama256
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    examples = [Example(f"### Instruction:\nsay {w}\n\n### Response:\n", w) for w in ("red fox", "blue cat", "tiger")]
    rows = kld.heldout(examples, tok, 64, n_prompts=2)
    assert len(rows.ids) == 3 and len(rows.prompts) == 2 and rows.expected == ["red fox", "blue cat"]
    ref = kld.reference(f16, rows, max_tokens=4)
    same = kld.measure(f16, ref, rows, max_tokens=4)
    assert same["mean_kld"] == 0 and same["p99_kld"] == 0 and same["top1"] == 1 and same["delta_ppl"] == 0
    assert same["answers"] == ref.answers
    q2 = quantize(f16, tmp_path / "m-Q2_K.gguf", "Q2_K")["path"]
    worse = kld.measure(q2, ref, rows, max_tokens=4)
    assert worse["mean_kld"] > 1e-4 and worse["p99_kld"] >= worse["mean_kld"] and worse["positions"] == same["positions"]


def test_gain_kept():
    assert kld.gain_kept(10.0, 2.0, 2.0) == 1.0
    assert kld.gain_kept(10.0, 2.0, 10.0) == 0.0
    assert kld.gave_back(kld.gain_kept(10.0, 2.0, 3.0)) and not kld.gave_back(kld.gain_kept(10.0, 2.0, 2.5))
    assert kld.gain_kept(2.0, 2.0, 3.0) is None  # nothing gained, nothing to keep
