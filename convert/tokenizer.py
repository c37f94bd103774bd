"""Tokenizer export: byte-level BPE (tokenizer.json), SentencePiece BPE (tokenizer.model, or a
tokenizer.json of that kind as transformers 5 saves it), plus special tokens, add-BOS/EOS flags
and the chat template."""
from __future__ import annotations

import json
import re
from pathlib import Path

import gguf

from edgetune.errors import EdgetuneError

# llama.cpp's pre-tokenizers for byte-level BPE, by the name tokenizer.ggml.pre gives them: the
# regexes it splits text with (each applied to the pieces of the one before) and whether a piece
# already in the vocabulary is taken whole without merging (ignore_merges). Which one a tokenizer
# needs is decided by running its own pre-tokenizer on PRE_PROBE and comparing the pieces.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen3.5/3.6: Qwen2's with combining marks (\p{M}) kept in words, as llama.cpp's "qwen35" runs it
QWEN35_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"
                r" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
                r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# GPT-4o's o200k split (Phi-4-mini, Llama 4): case runs with their contractions, digits in threes.
GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
               r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA_CPP_PRE = {
    "gpt-2": ((GPT2_REGEX,), False),
    "llama-bpe": ((LLAMA3_REGEX,), True),  # Llama 3
    "smaug-bpe": ((LLAMA3_REGEX,), False),  # the Llama 3 regex with plain merging (SmolLM3, OLMo 2)
    "qwen2": ((QWEN2_REGEX,), False),  # Qwen2, Qwen2.5, Qwen3
    "qwen35": ((QWEN35_REGEX,), False),  # Qwen3.5, Qwen3.6
    "smollm": ((r"\p{N}", GPT2_REGEX), False),  # GPT-2 with single digits (SmolLM2, Granite 3, StarCoder)
    "tekken": ((TEKKEN_REGEX,), True),  # Mistral Nemo, Ministral/Mistral 3
    "gpt-4o": ((GPT4O_REGEX,), False),  # o200k: Phi-4-mini (llama.cpp's converter hashes it as Xenova/gpt-4o)
}
PRE_PROBE = ["Hello world, it's HTTPServer's CamelCase don't I'LL WE'VE", " leading  double\tspace\t\ttabs   ",
             "new\nlines\n\n\nand\r\nmore \n x", "digits 1234567890 3.14159 1,000,000 x42y", "Ünïcödé café naïve",
             "日本語のテキスト 한국어 Ελληνικά", "emoji 🙂🚀 mixed!!! ...", "punctuation!?;:—\"quotes\" 'single' (a/b)",
             "def f(x):\n    return x**2  # comment\n\tpass", "https://example.com/path?q=1&x=2 a@b.co",
             "combining marks: cafe\u0301 n\u0303o नमस्ते"]
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def add_tokenizer(w: gguf.GGUFWriter, folder: Path, n_vocab: int, tok=None) -> None:
    """Vocabulary, merges or scores, special token ids, add-BOS/EOS flags and chat template; `tok`:
    the folder's tokenizer when the caller has loaded it."""
    # tokenizer.json is read once here: Gemma's is 33 MB, a second parse more than a second
    tj = _tokenizer_json(folder) if (folder / "tokenizer.json").is_file() else None
    kind = tokenizer_kind(folder, tj)
    tok = tok if tok is not None else _hf_tokenizer(folder)  # transformers' view: ids, added tokens, what it prepends/appends
    if kind == "spm-model":
        _add_sentencepiece(w, folder, tok, n_vocab)
    elif kind == "spm-json":
        _add_sentencepiece_from_json(w, folder, tj, tok, n_vocab)
    else:
        _add_bpe(w, folder, tj, tok, n_vocab)
    _add_special(w, tok, n_vocab, _stop_ids(folder))
    _add_chat_template(w, folder)


def check_tokenizer(folder: Path) -> str:
    """The tokenizer kind, after checking llama.cpp can tokenize as it does (reads tokenizer.json only)."""
    kind = tokenizer_kind(folder)
    if kind == "bpe":
        tj = _tokenizer_json(folder)
        _check_byte_level(tj, folder)
        bpe_pre_name(tj, str(folder))
    return kind


def _check_byte_level(tj: dict, folder: Path) -> None:
    if (tj.get("model") or {}).get("type") != "BPE":
        raise EdgetuneError(f"{folder}/tokenizer.json: model type {(tj.get('model') or {}).get('type')!r} is not BPE")
    if '"add_prefix_space": true' in json.dumps(tj.get("pre_tokenizer")):
        raise EdgetuneError(f"{folder}/tokenizer.json: ByteLevel add_prefix_space=true has no llama.cpp equivalent")


def tokenizer_kind(folder: Path, tj: dict | None = None) -> str:
    """"bpe" (byte-level, GPT-2 style), "spm-model" (tokenizer.model) or "spm-json" (a SentencePiece
    BPE that only comes as tokenizer.json: Metaspace or a ' ' -> '▁' normalizer, byte fallback).
    `tj`: the folder's tokenizer.json when the caller has read it already."""
    has_model = (folder / "tokenizer.model").is_file()
    if not (folder / "tokenizer.json").is_file():
        if has_model:
            return "spm-model"
        raise EdgetuneError(f"{folder}: no tokenizer.json or tokenizer.model")
    tj = tj if tj is not None else _tokenizer_json(folder)
    model = tj.get("model") or {}
    if "ByteLevel" in json.dumps(tj.get("pre_tokenizer") or {}):
        return "bpe"
    if has_model:
        return "spm-model"
    sentencepiece_like = model.get("byte_fallback") or "\u2581" in json.dumps(
        [tj.get("normalizer"), tj.get("pre_tokenizer")], ensure_ascii=False) or "Metaspace" in json.dumps(tj)
    if model.get("type") == "BPE" and sentencepiece_like:
        return "spm-json"
    raise EdgetuneError(f"{folder}/tokenizer.json: a {model.get('type')} tokenizer without a byte-level or "
                        "SentencePiece pre-tokenizer is not supported (byte-level BPE and SentencePiece BPE are)")


def _tokenizer_json(folder: Path) -> dict:
    try:
        return json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgetuneError(f"{folder}/tokenizer.json: unreadable ({e})") from None


def _add_sentencepiece_from_json(w: gguf.GGUFWriter, folder: Path, tj: dict, tok, n_vocab: int) -> None:
    """A SentencePiece-style BPE saved only as tokenizer.json (no tokenizer.model): llama.cpp's SPM
    tokenizer merges the adjacent pair whose result scores highest, so a piece made by merge k
    scores -k (HF applies the lowest-ranked merge first). Pieces no merge makes score below all."""
    model = tj.get("model") or {}
    rank: dict[str, int] = {}
    for k, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, k)
    never_merged = -float(len(rank) + 1)
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    by_id = {i: t for t, i in tok.get_vocab().items()}
    unk = model.get("unk_token")
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        tokens.append(text if text is not None else f"[PAD{i}]")
        scores.append(-float(rank[text]) if text in rank else 0.0 if text is None or len(text) == 1 else never_merged)
        types.append(gguf.TokenType.UNUSED if text is None
                     else gguf.TokenType.UNKNOWN if text == unk
                     else (gguf.TokenType.CONTROL if added[text].special else gguf.TokenType.USER_DEFINED)
                     if text in added
                     else gguf.TokenType.BYTE if _BYTE_PIECE.fullmatch(text)
                     else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    # Metaspace(prepend_scheme first/always) or a Prepend normalizer add SentencePiece's dummy prefix;
    # Gemma's plain ' ' -> '▁' replacement does not.
    prepend = json.dumps(tj.get("pre_tokenizer")) + json.dumps(tj.get("normalizer"))
    w.add_add_space_prefix('"prepend_scheme": "never"' not in prepend and ("Prepend" in prepend or "first" in prepend
                                                                          or "always" in prepend))


def bpe_pre_name(tokenizer_json: dict, where: str) -> str:
    """The llama.cpp pre-tokenizer that splits text exactly as this tokenizer.json's pre-tokenizer
    does (run on PRE_PROBE) and merges the same way; an error naming the tokenizer when none does."""
    from tokenizers import Tokenizer

    try:
        pre = Tokenizer.from_str(json.dumps(tokenizer_json)).pre_tokenizer
    except Exception as e:
        raise EdgetuneError(f"{where}/tokenizer.json: unreadable by the tokenizers library ({str(e).splitlines()[0]})") from None
    if pre is None:
        raise EdgetuneError(f"{where}/tokenizer.json: a byte-level BPE without a pre-tokenizer has no llama.cpp equivalent")
    theirs = [[text[a:b] for _piece, (a, b) in pre.pre_tokenize_str(text)] for text in PRE_PROBE]
    ignore_merges = bool((tokenizer_json.get("model") or {}).get("ignore_merges", False))
    for name, (regexes, merges_ignored) in LLAMA_CPP_PRE.items():
        if merges_ignored == ignore_merges and all(regex_split(t, regexes) == p for t, p in zip(PRE_PROBE, theirs)):
            return name
    steps = json.dumps(tokenizer_json.get("pre_tokenizer"))[:160]
    raise EdgetuneError(f"{where}/tokenizer.json ({_tokenizer_class(where)}): its pre-tokenizer {steps} with "
                        f"ignore_merges={str(ignore_merges).lower()} splits text unlike every pre-tokenizer llama.cpp "
                        f"implements ({', '.join(LLAMA_CPP_PRE)}); such a GGUF would tokenize differently")


def regex_split(text: str, regexes) -> list[str]:
    """llama.cpp's unicode_regex_split: each regex cuts every piece into its matches and the gaps."""
    import regex

    pieces = [text]
    for pattern in regexes:
        compiled = regex.compile(pattern)
        out = []
        for piece in pieces:
            at = 0
            for m in compiled.finditer(piece):
                if m.start() > at:
                    out.append(piece[at:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                at = m.end()
            if at < len(piece):
                out.append(piece[at:])
        pieces = out
    return pieces


def _tokenizer_class(where: str) -> str:
    try:
        config = json.loads((Path(where) / "tokenizer_config.json").read_text(encoding="utf-8"))
        return str(config.get("tokenizer_class") or "no tokenizer_class")
    except (OSError, json.JSONDecodeError):
        return "no tokenizer_config.json"


def _hf_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise EdgetuneError(f"{folder}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None


def _add_bpe(w: gguf.GGUFWriter, folder: Path, tj: dict, tok, n_vocab: int) -> None:
    model = tj.get("model") or {}
    _check_byte_level(tj, folder)
    pre = bpe_pre_name(tj, str(folder))
    vocab = tok.get_vocab()
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            # Added tokens are stored as plain text in tokenizer.json, not in byte-level form.
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL if added[text].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)


# sentencepiece's ModelProto.SentencePiece.Type -> GGUF token type
_SPM_TYPES = {1: gguf.TokenType.NORMAL, 2: gguf.TokenType.UNKNOWN, 3: gguf.TokenType.CONTROL,
              4: gguf.TokenType.USER_DEFINED, 5: gguf.TokenType.UNUSED, 6: gguf.TokenType.BYTE}


def _add_sentencepiece(w: gguf.GGUFWriter, folder: Path, tok, n_vocab: int) -> None:
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString((folder / "tokenizer.model").read_bytes())
    except Exception as e:
        raise EdgetuneError(f"{folder}/tokenizer.model: not a SentencePiece model ({e})") from None
    if proto.trainer_spec.model_type != 2:  # 1 unigram, 2 BPE: llama.cpp's SPM tokenizer merges like BPE
        raise EdgetuneError(f"{folder}/tokenizer.model: only SentencePiece BPE models are supported "
                            f"(this one is model_type {proto.trainer_spec.model_type})")
    tokens = [p.piece for p in proto.pieces]
    scores = [p.score for p in proto.pieces]
    types = [_SPM_TYPES.get(p.type, gguf.TokenType.NORMAL) for p in proto.pieces]
    # Tokens added on top of the SentencePiece model (tokenizer.json / added_tokens.json).
    for token_id, t in sorted(tok.added_tokens_decoder.items()):
        if token_id >= n_vocab:
            continue
        if token_id < len(tokens):
            if t.special:
                types[token_id] = gguf.TokenType.CONTROL
            continue
        _pad_vocab(tokens, scores, types, token_id)
        tokens.append(t.content)
        scores.append(-1000.0)
        types.append(gguf.TokenType.CONTROL if t.special else gguf.TokenType.USER_DEFINED)
    _pad_vocab(tokens, scores, types, n_vocab)  # the embedding may have more rows than the tokenizer
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens[:n_vocab])
    w.add_token_scores(scores[:n_vocab])
    w.add_token_types(types[:n_vocab])
    w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)


def _pad_vocab(tokens: list, scores: list, types: list, size: int) -> None:
    while len(tokens) < size:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)


def _stop_ids(folder: Path) -> list[int]:
    """The ids generation stops on, from generation_config.json (edgetune writes the chat
    template's turn end there beside EOS)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return []
    try:
        eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except json.JSONDecodeError as e:
        raise EdgetuneError(f"{path}: not valid JSON ({e})") from None
    return [eos] if isinstance(eos, int) else [i for i in eos or [] if isinstance(i, int)]


def _add_special(w: gguf.GGUFWriter, tok, n_vocab: int, stop_ids: list[int]) -> None:
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tok, f"{kind}_token_id", None)
        if token_id is not None and token_id < n_vocab:
            getattr(w, f"add_{kind}_token_id")(token_id)
    probe = tok("a")["input_ids"]
    w.add_add_bos_token(bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id)
    w.add_add_eos_token(bool(probe) and tok.eos_token_id is not None and probe[-1] == tok.eos_token_id
                        and len(probe) > 1)
    # The end of a chat turn: the stop id beside EOS, else a known turn-end token of the vocabulary.
    turn_ends = [i for i in stop_ids if i != tok.eos_token_id and i < n_vocab]
    if not turn_ends:
        vocab = tok.get_vocab()
        turn_ends = [vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>") if t in vocab]
    if turn_ends:
        w.add_eot_token_id(turn_ends[0])


def _add_chat_template(w: gguf.GGUFWriter, folder: Path) -> None:
    template = None
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "tokenizer_config.json").is_file():
        try:
            template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
        except json.JSONDecodeError as e:
            raise EdgetuneError(f"{folder}/tokenizer_config.json: not valid JSON ({e})") from None
    if template:
        w.add_chat_template(template)
