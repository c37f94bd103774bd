"""Datasets: read a file (JSONL, JSON, CSV, Parquet) or a hub id, validate every row, and render
each row as prompt + completion text ready for tokenization.

Formats:
  alpaca   {"instruction", "input"?, "output"}      rendered with the ### Instruction/Input/Response template
  chat     {"messages": [{"role", "content"}, ...]}  rendered with the tokenizer's chat template
  text     {"text"}                                  plain language modelling, loss on every token
"""
from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from edgetune.errors import EdgetuneError
from edgetune.events import ignore
from edgetune.hub import is_hub_id, resolve_dataset_id

FORMATS = ("alpaca", "chat", "text")
ROLES = ("system", "user", "assistant", "tool")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Row:
    where: str  # "data.jsonl:12" or "data.parquet row 4": what an error message names
    record: dict


@dataclass
class Example:
    """One training example as text: loss goes on `completion` (or on all of `prompt` for text rows)."""

    prompt: str
    completion: str
    where: str = ""


@dataclass
class Dataset:
    source: str
    format: str
    rows: list[Row]
    skipped: list[str] = field(default_factory=list)  # "where: why" for rows dropped with on_bad_row=skip


# ---------------------------------------------------------------- reading

def read_rows(source: str | os.PathLike) -> list[Row]:
    """Every record of a local file (by suffix) or a `datasets` hub id, with its location."""
    path = Path(source)
    if not path.exists():
        if is_hub_id(str(source)):
            return _read_hub(str(source))
        raise EdgetuneError(f"{source}: no such file")
    if path.is_dir():
        raise EdgetuneError(f"{source}: is a folder; give a .jsonl, .json, .csv or .parquet file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise EdgetuneError(f"{path}: unknown dataset type '{path.suffix}' (use .jsonl, .json, .csv or .parquet)")
    if path.stat().st_size == 0:
        raise EdgetuneError(f"{path}: file is empty")
    rows = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}[kind](path)
    if not rows:
        raise EdgetuneError(f"{path}: no rows (only empty lines)")
    return rows


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise EdgetuneError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x})") from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise EdgetuneError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise EdgetuneError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
        rows.append(Row(f"{path}:{n}", record))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(_text(path))
    except json.JSONDecodeError as e:
        raise EdgetuneError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):  # {"data": [...]} / {"train": [...]}: take the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise EdgetuneError(f"{path}: expected a JSON list of objects (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise EdgetuneError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    rows = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise EdgetuneError(f"{path} item {i}: expected a JSON object, got {type(record).__name__}")
        rows.append(Row(f"{path} item {i}", record))
    return rows


def _read_csv(path: Path) -> list[Row]:
    lines = _text(path).splitlines(keepends=True)
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    if not header or any(not (h or "").strip() for h in header) or len(set(header)) != len(header):
        raise EdgetuneError(f"{path}:1: bad CSV header {header!r} (need unique, non-empty column names)")
    rows = []
    for record in reader:
        n = reader.line_num
        if None in record:  # more cells than header columns
            raise EdgetuneError(f"{path}:{n}: {len(header) + len(record[None])} cells for {len(header)} columns")
        if all(not (v or "").strip() for v in record.values()):
            continue
        rows.append(Row(f"{path}:{n}", {k: v for k, v in record.items() if v is not None}))
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise EdgetuneError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    return [Row(f"{path} row {i}", r) for i, r in enumerate(table.to_pylist())]


def _read_hub(name: str) -> list[Row]:
    """The train split of a hub dataset, read from its cached (or freshly downloaded) snapshot."""
    import datasets

    folder = resolve_dataset_id(name)
    try:
        ds = datasets.load_dataset(str(folder), split="train")
    except Exception as e:
        raise EdgetuneError(f"{name}: could not load this hub dataset: {str(e).splitlines()[0]}") from None
    return [Row(f"{name} row {i}", dict(r)) for i, r in enumerate(ds)]


# ---------------------------------------------------------------- validating

def detect_format(rows: list[Row], source: str = "") -> str:
    keys = set(rows[0].record)
    if "messages" in keys:
        return "chat"
    if "instruction" in keys or "output" in keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    raise EdgetuneError(
        f"{rows[0].where}: cannot tell the format from fields {sorted(keys)} "
        "(need 'instruction'+'output' (alpaca), 'messages' (chat) or 'text')"
    )


def row_problem(record: dict, fmt: str) -> str | None:
    """Why this record is unusable in `fmt`, naming the field; None when it is fine."""
    if fmt == "alpaca":
        for name in ("instruction", "output"):
            value = record.get(name)
            if value is None:
                return f"missing field '{name}'"
            if not isinstance(value, str):
                return f"field '{name}' must be a string, got {type(value).__name__}"
            if not value.strip():
                return f"field '{name}' is empty"
        if not isinstance(record.get("input") or "", str):
            return f"field 'input' must be a string, got {type(record['input']).__name__}"
        return None
    if fmt == "chat":
        messages = record.get("messages")
        if messages is None:
            return "missing field 'messages'"
        if isinstance(messages, str):  # CSV cells hold JSON text
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                return "field 'messages' is not a JSON list"
            record["messages"] = messages
        if not isinstance(messages, list) or not messages:
            return "field 'messages' must be a non-empty list"
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                return f"messages[{i}] must be an object with 'role' and 'content'"
            if m.get("role") not in ROLES:
                return f"messages[{i}].role {m.get('role')!r} is not one of {', '.join(ROLES)}"
            if not isinstance(m.get("content"), str):
                return f"messages[{i}].content must be a string"
        if messages[-1]["role"] != "assistant":
            return "no assistant turn at the end of 'messages'"
        return None
    if fmt == "text":
        value = record.get("text")
        if value is None:
            return "missing field 'text'"
        if not isinstance(value, str):
            return f"field 'text' must be a string, got {type(value).__name__}"
        if not value.strip():
            return "field 'text' is empty"
        return None
    raise EdgetuneError(f"format '{fmt}' is not one of {', '.join(FORMATS)}")


def load_dataset(source: str | os.PathLike, fmt: str = "auto", on_bad_row: str = "error") -> Dataset:
    """Read and validate. on_bad_row='error' stops at the first bad row; 'skip' drops and counts them."""
    if on_bad_row not in ("error", "skip"):
        raise EdgetuneError(f"on_bad_row '{on_bad_row}' must be 'error' or 'skip'")
    rows = read_rows(source)
    fmt = detect_format(rows, str(source)) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise EdgetuneError(f"{source}: format '{fmt}' is not one of auto, {', '.join(FORMATS)}")
    good, skipped = [], []
    for row in rows:
        problem = row_problem(row.record, fmt)
        if problem is None:
            good.append(row)
        elif on_bad_row == "skip":
            skipped.append(f"{row.where}: {problem}")
        else:
            raise EdgetuneError(f"{row.where}: {problem}")
    if not good:
        raise EdgetuneError(f"{source}: no usable rows ({len(skipped)} bad; first: {skipped[0]})")
    return Dataset(str(source), fmt, good, skipped)


# ---------------------------------------------------------------- rendering

def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The seed's instruction template, up to where the model writes its answer."""
    prompt = f"### Instruction:\n{instruction}\n\n"
    if input_text.strip():
        prompt += f"### Input:\n{input_text}\n\n"
    return prompt + "### Response:\n"


def render(dataset: Dataset, tokenizer) -> list[Example]:
    """Prompt/completion text per row. Chat rows use the tokenizer's chat template (sandboxed Jinja)."""
    examples = []
    for row in dataset.rows:
        r = row.record
        if dataset.format == "alpaca":
            examples.append(Example(alpaca_prompt(r["instruction"], r.get("input") or ""), r["output"], row.where))
        elif dataset.format == "text":
            examples.append(Example("", r["text"], row.where))
        else:
            if not getattr(tokenizer, "chat_template", None):
                raise EdgetuneError(f"{dataset.source}: chat data needs a tokenizer with a chat template")
            messages = r["messages"]
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            if not full.startswith(prompt):
                raise EdgetuneError(f"{row.where}: the chat template renders the history differently alone")
            examples.append(Example(prompt, full[len(prompt):], row.where))
    return examples


def split(examples: list, eval_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Deterministic shuffle then split; at least one eval example when there are two or more rows."""
    if not 0 <= eval_fraction < 1:
        raise EdgetuneError(f"eval_split {eval_fraction} must be in [0, 1)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(examples) * eval_fraction)
    if eval_fraction > 0 and n_eval == 0 and len(examples) > 1:
        n_eval = 1
    eval_idx = set(order[:n_eval])
    train = [e for i, e in enumerate(examples) if i not in eval_idx]
    evals = [e for i, e in enumerate(examples) if i in eval_idx]
    return train, evals


# ---------------------------------------------------------------- tokenizing

@dataclass
class TokenStats:
    count: int
    mean: float
    p50: int
    p95: int
    max: int
    truncated: int
    max_length: int
    histogram: list[tuple[int, int]]  # (bucket upper bound, count)

    def summary(self) -> str:
        return (f"{self.count} rows, tokens mean {self.mean:.0f} / p50 {self.p50} / p95 {self.p95} / max {self.max}; "
                f"{self.truncated} truncated at {self.max_length}")


def tokenize(examples: Iterable[Example], tokenizer, max_length: int, completion_only: bool = True) -> list[dict]:
    """input_ids + completion_mask per example, EOS closing each completion, truncated to max_length."""
    rows = []
    eos = tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    for ex in examples:
        prompt_ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
        if bos and prompt_ids[:1] != bos:  # a chat template may already have written the BOS text
            prompt_ids = bos + prompt_ids
        completion_ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        if eos is not None and (not completion_ids or completion_ids[-1] != eos):
            completion_ids.append(eos)
        ids = prompt_ids + completion_ids
        mask = ([0] * len(prompt_ids) if completion_only and ex.prompt else [1] * len(prompt_ids)) + [1] * len(completion_ids)
        rows.append({"input_ids": ids[:max_length], "completion_mask": mask[:max_length], "length": len(ids)})
    return rows


def _adds_bos(tokenizer) -> bool:
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


def inspect(source: str, fmt: str, on_bad_row: str, base: str, max_length: int, on_event=ignore):
    """Validate a dataset and measure it with a base model's tokenizer: (dataset, examples, stats).
    The CLI's `data inspect` and the TUI's dataset step both show this."""
    from edgetune.base import resolve_base
    from edgetune.train import dataset_source, load_tokenizer

    ds = load_dataset(dataset_source(source or "demo"), fmt, on_bad_row)
    tok = load_tokenizer(resolve_base(base, on_event))
    examples = render(ds, tok)
    return ds, examples, token_stats(tokenize(examples, tok, max_length), max_length)


def token_stats(rows: list[dict], max_length: int, buckets: int = 8) -> TokenStats:
    lengths = sorted(r["length"] for r in rows) or [0]
    top = max(lengths)
    width = max(1, -(-top // buckets))
    hist = [(width * (b + 1), sum(1 for n in lengths if width * b < n <= width * (b + 1))) for b in range(buckets)]
    return TokenStats(
        count=len(rows), mean=sum(lengths) / len(lengths), p50=lengths[len(lengths) // 2],
        p95=lengths[min(len(lengths) - 1, int(len(lengths) * 0.95))], max=top,
        truncated=sum(1 for n in lengths if n > max_length), max_length=max_length, histogram=hist,
    )
