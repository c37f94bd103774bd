"""Tokenizer export: byte-level BPE (tokenizer.json), SentencePiece (tokenizer.model), or, for a
model imported from a GGUF, the original file's tokenizer copied verbatim. Plus special tokens,
add-BOS/EOS flags and the chat template."""
from __future__ import annotations

import json
import re

from pathlib import Path

import gguf

from edgetune.errors import EdgetuneError

# Pre-tokenizer regexes llama.cpp implements, by the name it knows them under.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
KNOWN_PRE = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    _GPT2_REGEX: "gpt-2",
}
from edgetune.models import SOURCE_FILE  # written by import_gguf_base


def add_tokenizer(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    source = folder / SOURCE_FILE
    if source.is_file():
        gguf_path = Path(json.loads(source.read_text())["gguf"])
        if gguf_path.is_file():
            copy_tokenizer_from_gguf(w, gguf_path)
            _add_chat_template(w, folder)
            return
    if (folder / "tokenizer.model").is_file() and not _is_byte_level(folder):
        _add_sentencepiece(w, folder, n_vocab)
    elif (folder / "tokenizer.json").is_file() and _is_metaspace(folder):
        _add_sentencepiece_from_json(w, folder, n_vocab)
    elif (folder / "tokenizer.json").is_file():
        _add_bpe(w, folder, n_vocab)
    else:
        raise EdgetuneError(f"{folder}: no tokenizer.json or tokenizer.model")
    _add_special(w, folder, n_vocab)
    _add_chat_template(w, folder)


def _tokenizer_json(folder: Path) -> dict:
    try:
        return json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EdgetuneError(f"{folder}/tokenizer.json: unreadable ({e})") from None


def _is_byte_level(folder: Path) -> bool:
    if not (folder / "tokenizer.json").is_file():
        return False
    return "ByteLevel" in json.dumps(_tokenizer_json(folder).get("pre_tokenizer") or {})


def _is_metaspace(folder: Path) -> bool:
    tj = _tokenizer_json(folder)
    return "Metaspace" in json.dumps([tj.get("pre_tokenizer"), tj.get("normalizer"), tj.get("decoder")])


def _add_sentencepiece_from_json(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    """A SentencePiece-style BPE saved only as tokenizer.json (no tokenizer.model): llama.cpp's SPM
    tokenizer merges by highest score, so each merged piece scores minus its merge rank."""
    tj = _tokenizer_json(folder)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise EdgetuneError(f"{folder}/tokenizer.json: SentencePiece model type {model.get('type')!r} is not "
                            "supported (BPE only)")
    rank = {}
    for k, m in enumerate(model.get("merges", [])):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, k)
    tok = _hf_tokenizer(folder)
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    by_id = {i: t for t, i in tok.get_vocab().items()}
    unk = model.get("unk_token")
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        tokens.append(text if text is not None else f"[PAD{i}]")
        scores.append(-float(rank[text]) if text in rank else 0.0)
        types.append(gguf.TokenType.UNUSED if text is None
                     else gguf.TokenType.UNKNOWN if text == unk
                     else (gguf.TokenType.CONTROL if added[text].special else gguf.TokenType.USER_DEFINED)
                     if text in added
                     else gguf.TokenType.BYTE if re.fullmatch(r"<0x[0-9A-F]{2}>", text)
                     else gguf.TokenType.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    prepend = json.dumps(tj.get("pre_tokenizer")) + json.dumps(tj.get("normalizer"))
    w.add_add_space_prefix('"prepend_scheme": "never"' not in prepend and ("Prepend" in prepend or "first" in prepend
                                                                          or "always" in prepend))


def bpe_pre_name(tokenizer_json: dict, where: str) -> str:
    """The llama.cpp pre-tokenizer name matching this tokenizer.json's pre-tokenizer."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split" and isinstance(s.get("pattern"), dict)]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if not regexes and byte_level and byte_level[0].get("use_regex", True):
        return "gpt-2"
    for regex in regexes:
        if regex in KNOWN_PRE:
            return KNOWN_PRE[regex]
    raise EdgetuneError(f"{where}/tokenizer.json: pre-tokenizer {json.dumps(pre)[:120]} is not one llama.cpp "
                        f"knows (gpt-2, llama-bpe, qwen2)")


def _hf_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise EdgetuneError(f"{folder}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None


def _add_bpe(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    tj = _tokenizer_json(folder)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise EdgetuneError(f"{folder}/tokenizer.json: model type {model.get('type')!r} is not BPE")
    pre = bpe_pre_name(tj, str(folder))
    tok = _hf_tokenizer(folder)
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


def _add_sentencepiece(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    try:
        sp.Load(str(folder / "tokenizer.model"))
    except Exception as e:
        raise EdgetuneError(f"{folder}/tokenizer.model: not a SentencePiece model ({e})") from None
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(i))
        scores.append(sp.GetScore(i))
        types.append(gguf.TokenType.UNKNOWN if sp.IsUnknown(i) else gguf.TokenType.CONTROL if sp.IsControl(i)
                     else gguf.TokenType.UNUSED if sp.IsUnused(i) else gguf.TokenType.BYTE if sp.IsByte(i)
                     else gguf.TokenType.NORMAL)
    # Tokens added on top of the SentencePiece model (tokenizer.json / added_tokens.json).
    tok = _hf_tokenizer(folder)
    for token_id, t in sorted(tok.added_tokens_decoder.items()):
        if token_id < len(tokens):
            if t.special:
                types[token_id] = gguf.TokenType.CONTROL
            continue
        while len(tokens) < token_id:
            tokens.append(f"[PAD{len(tokens)}]"); scores.append(-1000.0); types.append(gguf.TokenType.UNUSED)  # noqa: E702
        tokens.append(t.content); scores.append(-1000.0)  # noqa: E702
        types.append(gguf.TokenType.CONTROL if t.special else gguf.TokenType.USER_DEFINED)
    while len(tokens) < n_vocab:
        tokens.append(f"[PAD{len(tokens)}]"); scores.append(-1000.0); types.append(gguf.TokenType.UNUSED)  # noqa: E702
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)


def _add_special(w: gguf.GGUFWriter, folder: Path, n_vocab: int) -> None:
    tok = _hf_tokenizer(folder)
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tok, f"{kind}_token_id", None)
        if token_id is not None and token_id < n_vocab:
            getattr(w, f"add_{kind}_token_id")(token_id)
    probe = tok("a")["input_ids"]
    w.add_add_bos_token(bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id)
    w.add_add_eos_token(bool(probe) and tok.eos_token_id is not None and probe[-1] == tok.eos_token_id
                        and len(probe) > 1)
    vocab = tok.get_vocab()
    for eot in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if eot in vocab:
            w.add_eot_token_id(vocab[eot])
            break


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


def copy_tokenizer_from_gguf(w: gguf.GGUFWriter, path: Path) -> None:
    """Every tokenizer.* key of an existing GGUF, as it is (an imported base keeps its exact vocab)."""
    reader = gguf.GGUFReader(str(path), "r")
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer.") or field.name == "tokenizer.chat_template":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                values = [bytes(field.parts[i]) for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            w.add_key_value(field.name, values, kind, sub_type=sub)
        elif kind == gguf.GGUFValueType.STRING:
            w.add_key_value(field.name, bytes(field.parts[field.data[0]]).decode("utf-8"), kind)
        else:
            w.add_key_value(field.name, field.parts[field.data[0]].tolist()[0], kind)


