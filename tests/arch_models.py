"""Tiny randomly initialised models of every supported architecture, with locally trained
tokenizers (byte-level BPE with each pre-tokenizer llama.cpp knows, and SentencePiece)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetune.demo import CHAT_TEMPLATE, corpus

EXTRA_TEXT = ["Ünïcödé café naïve façade 日本語のテキスト emoji 🙂🚀 https://example.com/path?q=1&x=2",
              "CamelCase snake_case kebab-case 1234567890 3.14159 multiple   spaces\tand\ttabs\nnew\nlines"] * 20
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe_tokenizer(pre: str = "gpt-2", vocab_size: int = 512):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if pre == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        regex = {"qwen2": QWEN2_REGEX, "llama-bpe": LLAMA3_REGEX}[pre]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus(2000) + EXTRA_TEXT, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def spm_tokenizer(folder: Path, vocab_size: int = 600):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus(2000) + EXTRA_TEXT))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        minloglevel=2)
    tok_dir = folder / "tok"
    tok_dir.mkdir(exist_ok=True)
    shutil.copy(folder / "sp.model", tok_dir / "tokenizer.model")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False}))
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = ("{% for m in messages %}{{ '<s>' if loop.first else '' }}{{ m['role'] }}: "
                         "{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    return tok


def config_for(arch: str, vocab: int, bos: int, eos: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.1, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(**{**common, "head_dim": 32})
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**{**common, "tie_word_embeddings": True, "head_dim": 16,
                                      "sliding_window": 128, "query_pre_attn_scalar": 16})
    if arch == "phi3":
        return tf.Phi3Config(**{**common, "pad_token_id": eos})
    raise ValueError(arch)


TOKENIZER_FOR = {"llama": "gpt-2", "mistral": "spm", "qwen2": "qwen2", "qwen3": "llama-bpe",
                 "gemma3": "spm", "phi3": "gpt-2"}


def build(arch: str, folder: Path) -> Path:
    """Save a tiny random `arch` model with its tokenizer under `folder`; return the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    kind = TOKENIZER_FOR[arch]
    tok = spm_tokenizer(folder / "spm") if kind == "spm" else bpe_tokenizer(kind)
    torch.manual_seed(0)
    config = config_for(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    config.architectures = [type(AutoModelForCausalLM.from_config(config)).__name__]
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    with torch.no_grad():  # norms away from 1 (and gemma's away from 0) so their handling shows in logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) * 0.5 + (0.25 if arch == "gemma3" else 0.75))
    out = folder / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
