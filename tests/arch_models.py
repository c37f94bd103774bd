"""Tiny randomly initialised models of every supported architecture, with locally trained
tokenizers (byte-level BPE with each pre-tokenizer llama.cpp knows, and SentencePiece)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetune.demo import CHAT_TEMPLATE, corpus

EXTRA_TEXT = ["Ünïcödé café naïve façade 日本語のテキスト emoji 🙂🚀 https://example.com/path?q=1&x=2",
              "CamelCase snake_case kebab-case 1234567890 3.14159 multiple   spaces\tand\ttabs\nnew\nlines"] * 20
# Each family's published pre-tokenizer regex (from its tokenizer.json), written out here so the
# tests do not take them from the converter they check.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer kind -> (split regex or None for plain ByteLevel, single digits first, ignore_merges)
BPE_KINDS = {"gpt-2": (None, False, False), "smollm": (None, True, False), "qwen2": (QWEN2_REGEX, False, False),
             "llama-bpe": (LLAMA3_REGEX, False, True), "smaug-bpe": (LLAMA3_REGEX, False, False),
             "tekken": (TEKKEN_REGEX, False, True)}


def bpe_tokenizer(pre: str = "gpt-2", vocab_size: int = 512):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    regex, digits, ignore_merges = BPE_KINDS[pre]
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    if regex is None:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False))
    else:
        steps += [pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    tok.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
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
    # each turn closed by EOS, so generation stops (the pipeline refuses a template without it)
    tok.chat_template = ("{% for m in messages %}{{ '<s>' if loop.first else '' }}{{ m['role'] }}: "
                         "{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    return tok


def config_for(arch: str, vocab: int, bos: int, eos: int):
    """A tiny config of each family's real transformers config class, with the features that set
    the family apart switched on (and sized so they show in the logits)."""
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.1, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False)
    tied = {**common, "tie_word_embeddings": True}
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "llama3":  # Llama 3.2 1B/3B: llama3 RoPE scaling, tied embeddings
        return tf.LlamaConfig(**tied, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    if arch == "smollm2":
        return tf.LlamaConfig(**tied)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen2.5":  # the small Qwen2.5: tied, with the YaRN setting of the long-context configs
        return tf.Qwen2Config(**tied, rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                                       "original_max_position_embeddings": 64})
    if arch == "qwen3":
        return tf.Qwen3Config(**{**tied, "head_dim": 32})
    if arch == "gemma2":
        return tf.Gemma2Config(**{**tied, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
                                  "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0})
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**{**tied, "head_dim": 16, "sliding_window": 128, "query_pre_attn_scalar": 16})
    if arch == "gemma3-mm":  # Gemma 3 4B and up: the text model inside Gemma3ForConditionalGeneration
        text = tf.Gemma3TextConfig(**{**tied, "head_dim": 16, "sliding_window": 128, "query_pre_attn_scalar": 16,
                                      "rope_parameters": {
                                          "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                          "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})
        vision = tf.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=8)
        return tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                               image_token_index=vocab - 1, boi_token_index=bos, eoi_token_index=eos,
                               bos_token_id=bos, eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=True)
    if arch == "phi3":  # Phi-3.5 mini: partial rotary, LongRoPE factors
        half = 64 // 4 // 2 // 2
        # llama.cpp picks the long factors when its context exceeds the original one, HF when the
        # sequence does: an original context of 256 keeps both on the short ones in short tests.
        return tf.Phi3Config(**{**common, "pad_token_id": eos, "partial_rotary_factor": 0.5,
                                "max_position_embeddings": 1024, "original_max_position_embeddings": 256,
                                "rope_parameters": {
                                    "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                    "long_factor": [1.0 + i for i in range(half)],
                                    "short_factor": [1.0 + 0.5 * i for i in range(half)]}})
    if arch == "mistral3":  # Ministral 3: YaRN with mscale, Llama-4 attention temperature
        return tf.Ministral3Config(**{**common, "head_dim": 16, "pad_token_id": eos, "rope_parameters": {
            "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 64,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}})
    if arch == "smollm3":  # 4 layers, so the 4th is a NoPE layer
        return tf.SmolLM3Config(**{**tied, "num_hidden_layers": 4, "pad_token_id": eos})
    if arch == "granite":  # the four multipliers, away from 1
        return tf.GraniteConfig(**common, embedding_multiplier=3.0, attention_multiplier=0.2,
                                residual_multiplier=0.5, logits_scaling=2.0)
    if arch == "olmo2":
        return tf.Olmo2Config(**{**common, "pad_token_id": eos})
    if arch == "qwen3moe":  # Qwen3-30B-A3B's shape, tiny: every layer a mixture, top-k renormalised
        return tf.Qwen3MoeConfig(**{**common, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                    "moe_intermediate_size": 32, "decoder_sparse_step": 1, "norm_topk_prob": True})
    raise ValueError(arch)


TOKENIZER_FOR = {"llama": "gpt-2", "llama3": "llama-bpe", "smollm2": "smollm", "mistral": "spm", "qwen2": "qwen2",
                 "qwen2.5": "qwen2", "qwen3": "qwen2", "gemma2": "spm", "gemma3": "spm", "gemma3-mm": "spm",
                 "phi3": "spm", "mistral3": "tekken", "smollm3": "smaug-bpe", "granite": "smollm",
                 "olmo2": "smaug-bpe"}
TOKENIZER_FOR["qwen3moe"] = "qwen2"


def build(arch: str, folder: Path) -> Path:
    """Save a tiny random `arch` model with its tokenizer under `folder`; return the folder."""
    import torch
    from transformers import AutoModelForCausalLM

    kind = TOKENIZER_FOR[arch]
    tok = spm_tokenizer(folder / "spm") if kind == "spm" else bpe_tokenizer(kind)
    torch.manual_seed(0)
    config = config_for(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    model.config.architectures = [type(model).__name__]
    with torch.no_grad():  # norms away from 1 (and gemma's away from 0) so their handling shows in logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand_like(p) * 0.5 + (0.25 if arch.startswith("gemma") else 0.75))
            elif name.endswith(".bias"):  # Qwen's q/k/v biases start at zero
                p.copy_(torch.randn_like(p) * 0.1)
    out = folder / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
