"""Tiny randomly initialised models of every supported architecture, with locally trained
tokenizers (byte-level BPE with each pre-tokenizer llama.cpp knows, and SentencePiece)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetune.inputs.demo import CHAT_TEMPLATE, corpus

EXTRA_TEXT = ["Ünïcödé café naïve façade 日本語のテキスト emoji 🙂🚀 https://example.com/path?q=1&x=2",
              "CamelCase snake_case kebab-case 1234567890 3.14159 multiple   spaces\tand\ttabs\nnew\nlines"] * 20
# Each family's published pre-tokenizer regex (from its tokenizer.json), written out here so the
# tests do not take them from the converter they check.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# GPT-4o's o200k split, as in Phi-4-mini's tokenizer.json (Split, Isolated, then ByteLevel without its regex)
O200K_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer kind -> (split regex or None for plain ByteLevel, single digits first, ignore_merges)
BPE_KINDS = {"gpt-2": (None, False, False), "smollm": (None, True, False), "qwen2": (QWEN2_REGEX, False, False),
             "llama-bpe": (LLAMA3_REGEX, False, True), "smaug-bpe": (LLAMA3_REGEX, False, False),
             "tekken": (TEKKEN_REGEX, False, True), "gpt-4o": (O200K_REGEX, False, False),
             "qwen35": (QWEN35_REGEX, False, False)}


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
    if arch == "phi4-mini":  # Phi-4-mini: 3/4 of each head rotated, tied embeddings, LongRoPE, no sliding window
        half = 64 // 4 * 3 // 4 // 2
        return tf.Phi3Config(**{**tied, "pad_token_id": eos, "partial_rotary_factor": 0.75, "sliding_window": None,
                                "max_position_embeddings": 1024, "original_max_position_embeddings": 256,
                                "rope_parameters": {
                                    "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                    "long_factor": [1.0 + i for i in range(half)],
                                    "short_factor": [1.0 + 0.5 * i for i in range(half)]}})
    if arch == "olmo3":  # a sliding layer (window 8) then a full one with OLMo 3's YaRN
        return tf.Olmo3Config(**{**common, "pad_token_id": eos, "sliding_window": 8,
                                 "layer_types": ["sliding_attention", "full_attention"], "rope_parameters": {
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0},
                                     "full_attention": {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 4.0,
                                                        "original_max_position_embeddings": 64,
                                                        "attention_factor": 1.2, "beta_fast": 32.0,
                                                        "beta_slow": 1.0}}})
    if arch == "mistral3-mm":  # Ministral 3 3B: the tied text model inside Mistral3ForConditionalGeneration
        text = config_for("mistral3", vocab, bos, eos)
        text.tie_word_embeddings = True
        vision = tf.PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, head_dim=16, image_size=32, patch_size=8)
        return tf.Mistral3Config(text_config=text, vision_config=vision, image_token_index=vocab - 1,
                                 spatial_merge_size=2, tie_word_embeddings=True)
    if arch == "qwen35":  # Qwen3.5 0.8B/2B: delta-net and gated full attention alternating, more value
        # than key heads in the delta-net (the head reorder shows), partial M-RoPE, tied embeddings
        return tf.Qwen3_5TextConfig(**{**tied, "num_hidden_layers": 4, "head_dim": 32, "pad_token_id": eos,
                                       "layer_types": ["linear_attention", "full_attention"] * 2,
                                       "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                                       "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                                       "linear_conv_kernel_dim": 4, "rope_parameters": {
                                           "rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                           "mrope_section": [2, 1, 1], "mrope_interleaved": True}})
    if arch == "qwen35-mm":  # Qwen3.5 as published: the text model inside Qwen3_5ForConditionalGeneration
        vision = tf.Qwen3_5VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                                        out_hidden_size=64, num_position_embeddings=16)
        return tf.Qwen3_5Config(text_config=config_for("qwen35", vocab, bos, eos).to_dict(),
                                vision_config=vision.to_dict(), image_token_id=vocab - 1, video_token_id=vocab - 2,
                                vision_start_token_id=vocab - 3, vision_end_token_id=vocab - 4,
                                tie_word_embeddings=True)
    if arch == "gemma4":  # Gemma 4 E2B/E4B: per-layer embeddings, sliding and full layers of different
        # head sizes, proportional RoPE on the full ones, KV sharing with a double-wide MLP, soft-capping
        return tf.Gemma4TextConfig(**{**tied, "num_hidden_layers": 6, "head_dim": 16, "global_head_dim": 32,
                                      "layer_types": ["sliding_attention", "sliding_attention", "full_attention",
                                                      "sliding_attention", "full_attention", "full_attention"],
                                      "sliding_window": 8, "num_kv_shared_layers": 3, "use_double_wide_mlp": True,
                                      "hidden_size_per_layer_input": 16, "vocab_size_per_layer_input": vocab,
                                      "final_logit_softcapping": 3.0, "pad_token_id": eos})
    if arch == "gemma4-mm":  # the text model inside Gemma4ForConditionalGeneration, 31B-style: values are
        # the keys on full layers (attention_k_eq_v) with their own KV head count, no per-layer embeddings
        text = tf.Gemma4TextConfig(**{**tied, "num_hidden_layers": 3, "head_dim": 16, "global_head_dim": 32,
                                      "attention_k_eq_v": True, "num_global_key_value_heads": 1,
                                      "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
                                      "sliding_window": 8, "hidden_size_per_layer_input": 0,
                                      "final_logit_softcapping": 3.0, "pad_token_id": eos})
        vision = tf.Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, head_dim=16)
        audio = tf.Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
        # media placeholders (replaced by the pad token in text-only input) on ids text never uses:
        # SentencePiece's byte pieces <0x00>..<0x02>
        return tf.Gemma4Config(text_config=text, vision_config=vision, audio_config=audio, boi_token_id=bos,
                               eoi_token_id=eos, image_token_id=3, video_token_id=4, boa_token_id=bos,
                               eoa_token_index=eos, audio_token_id=5, tie_word_embeddings=True)
    if arch == "qwen3moe":  # Qwen3-30B-A3B's shape, tiny: every layer a mixture, top-k renormalised
        return tf.Qwen3MoeConfig(**{**common, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                    "moe_intermediate_size": 32, "decoder_sparse_step": 1, "norm_topk_prob": True})
    raise ValueError(arch)


TOKENIZER_FOR = {"llama": "gpt-2", "llama3": "llama-bpe", "smollm2": "smollm", "mistral": "spm", "qwen2": "qwen2",
                 "qwen2.5": "qwen2", "qwen3": "qwen2", "gemma2": "spm", "gemma3": "spm", "gemma3-mm": "spm",
                 "phi3": "spm", "mistral3": "tekken", "smollm3": "smaug-bpe", "granite": "smollm",
                 "olmo2": "smaug-bpe", "phi4-mini": "gpt-4o", "olmo3": "smaug-bpe", "mistral3-mm": "tekken",
                 "qwen35": "qwen35", "qwen35-mm": "qwen35",
                 "gemma4": "spm", "gemma4-mm": "spm"}
# where AutoModelForCausalLM would build another class than the checkpoints have
MODEL_CLASS = {"qwen35-mm": "Qwen3_5ForConditionalGeneration"}
TOKENIZER_FOR["qwen3moe"] = "qwen2"


def build(arch: str, folder: Path) -> Path:
    """Save a tiny random `arch` model with its tokenizer under `folder`; return the folder."""
    import torch

    from edgetune.inputs.models import model_class

    kind = TOKENIZER_FOR[arch]
    tok = spm_tokenizer(folder / "spm") if kind == "spm" else bpe_tokenizer(kind)
    torch.manual_seed(0)
    config = config_for(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    if arch in MODEL_CLASS:
        import transformers
        model = getattr(transformers, MODEL_CLASS[arch])(config).to(torch.float32)
    else:
        model = model_class(config.model_type).from_config(config).to(torch.float32)
    model.config.architectures = [type(model).__name__]
    with torch.no_grad():  # norms away from 1 (and 1 + w ones away from 0) so their handling shows in logits
        for name, p in model.named_parameters():
            if "norm" in name:
                one_plus_w = arch.startswith("gemma") or (arch.startswith("qwen35") and ".linear_attn." not in name)
                p.copy_(torch.rand_like(p) * 0.5 + (0.25 if one_plus_w else 0.75))
            elif name.endswith(".bias"):  # Qwen's q/k/v biases start at zero
                p.copy_(torch.randn_like(p) * 0.1)
            elif name.endswith(".A_log"):
                # Delta-net decay rates A up to 3, not the init's 16: a state that forgets each token
                # at once leaves a normed output whose sign is that of one q.k product near zero, so
                # any rounding flips it (bf16 weights alone gave NMSE 2e-3 in HF itself).
                p.copy_(torch.empty_like(p).uniform_(0.5, 3.0).log())
        for mixer in [m for m in model.modules() if hasattr(m, "in_proj_qkv")]:
            # ... and queries that find their keys (q.k away from 0), as attention learns to
            for w in (mixer.in_proj_qkv.weight, mixer.conv1d.weight):
                w[: mixer.key_dim] = w[mixer.key_dim: 2 * mixer.key_dim] + 0.3 * w[: mixer.key_dim]
        for name, b in model.named_buffers():  # Gemma 4's per-layer output scale (a saved buffer) away from 1
            if name.endswith("layer_scalar"):
                b.copy_(torch.rand_like(b) * 0.5 + 0.75)
    out = folder / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
