"""Datasets: read a file (JSONL, JSON, CSV, Parquet) or a hub id, validate every row, and render
each row as prompt + completion text ready for tokenization.

Formats:
  alpaca   {"instruction", "input"?, "output"}      rendered with the ### Instruction/Input/Response template
  chat     {"messages": [{"role", "content"}, ...]}  rendered with the tokenizer's chat template
  text     {"text"}                                  plain language modelling, loss on every token

Other names map with data.columns (LLaMA-Factory's dataset_info names): {instruction: question,
output: answer}, or for chat {messages: conversations, role_tag: from, content_tag: value,
user_tag: human, assistant_tag: gpt}.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from edgetune.errors import EdgetuneError
from edgetune.events import ignore
from edgetune.inputs import templates
from edgetune.inputs.base import load_tokenizer, resolve_base
from edgetune.inputs.demo import demo_dataset_path
from edgetune.inputs.hub import is_hub_id, resolve_dataset_id
from edgetune.inputs.recipe import COLUMN_FIELDS, DataSpec
from edgetune.inputs.templates import Chosen, alpaca_messages

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

    prompt: str  # rendered text, BOS included where the template writes it
    completion: str  # the reply and the token that closes the turn
    where: str = ""
    messages: list[dict] = field(default_factory=list)  # the conversation before the reply (chat path)
    answer: str = ""  # the reply alone, to compare generated text with


@dataclass
class Dataset:
    source: str
    format: str
    rows: list[Row]
    skipped: list[str] = field(default_factory=list)  # "where: why" for rows dropped with on_bad_row=skip


# ---------------------------------------------------------------- reading

def dataset_source(path: str) -> str:
    """The file behind a recipe's data.path ('demo' is the built-in dataset, generated once)."""
    if path == "demo":
        return str(demo_dataset_path())
    return path


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
        "(need 'instruction'+'output' (alpaca), 'messages' (chat) or 'text'; or map yours with data.columns, "
        "e.g. {instruction: question, output: answer})"
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


def file_columns(rows: list[Row]) -> list[str]:
    """The column names of a file's rows (of its first hundred), in file order."""
    return list(dict.fromkeys(k for r in rows[:100] for k in r.record))


# What people call the alpaca fields, most usual first (the wizard proposes a mapping from them).
USUAL_NAMES = {"instruction": ("instruction", "question", "prompt", "query", "problem", "input_text", "source"),
               "input": ("input", "context"),
               "output": ("output", "answer", "response", "completion", "target", "solution", "output_text")}


def suggest_columns(columns: list[str]) -> dict[str, str]:
    """A data.columns mapping for alpaca from a file's own column names ({} when they fit already)."""
    lower = {c.lower(): c for c in columns}
    found = {key: next((lower[n] for n in names if n in lower), "") for key, names in USUAL_NAMES.items()}
    if found["input"] in (found["instruction"], found["output"]):
        found["input"] = ""
    return {k: v for k, v in found.items() if v and v != k}


def map_columns(rows: list[Row], columns: dict[str, str], source: str) -> list[Row]:
    """The rows with data.columns applied: each mapped column under the field name edgetune reads,
    and each chat message's role and content under 'role'/'content' with the usual role names. A
    mapped column the file lacks is one line naming it and the file's columns."""
    fields = {k: v for k, v in columns.items() if k in COLUMN_FIELDS}
    present = file_columns(rows)
    for key, column in fields.items():
        if column not in present:
            raise EdgetuneError(f"{source}: data.columns.{key} is {column!r}, which is not a column of this file "
                                f"(its columns: {', '.join(present)})")
    role, content = columns.get("role_tag", "role"), columns.get("content_tag", "content")
    roles = {columns[f"{r}_tag"]: r for r in ("user", "assistant", "system") if f"{r}_tag" in columns}
    tagged = role != "role" or content != "content" or bool(roles)
    mapped = []
    for row in rows:
        record = dict(row.record)
        for key, column in fields.items():
            if column in row.record:
                record[key] = row.record[column]
        messages = record.get("messages")
        if tagged and isinstance(messages, str):  # CSV cells hold JSON text
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                pass
        if tagged and isinstance(messages, list):
            record["messages"] = [{"role": roles.get(m.get(role), m.get(role)), "content": m.get(content)}
                                  if isinstance(m, dict) else m for m in messages]
        mapped.append(Row(row.where, record))
    return mapped


def load_dataset(source: str | os.PathLike, fmt: str = "auto", on_bad_row: str = "error",
                 columns: dict[str, str] | None = None) -> Dataset:
    """Read and validate. on_bad_row='error' stops at the first bad row; 'skip' drops and counts them.
    `columns` (data.columns) maps the file's own names to the fields of its format first."""
    if on_bad_row not in ("error", "skip"):
        raise EdgetuneError(f"on_bad_row '{on_bad_row}' must be 'error' or 'skip'")
    rows = read_rows(source)
    if columns:
        rows = map_columns(rows, columns, str(source))
    fmt = detect_format(rows, str(source)) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise EdgetuneError(f"{source}: format '{fmt}' is not one of auto, {', '.join(FORMATS)}")
    good, skipped = [], []
    for row in rows:
        problem = row_problem(row.record, fmt)
        if problem is None:
            good.append(row)
        else:
            for key, column in (columns or {}).items():  # name the file's column, not only edgetune's field
                problem = problem.replace(f"field '{key}'", f"field '{column}' (data.columns.{key})")
            if on_bad_row == "skip":
                skipped.append(f"{row.where}: {problem}")
            else:
                raise EdgetuneError(f"{row.where}: {problem}")
    if not good:
        raise EdgetuneError(f"{source}: no usable rows ({len(skipped)} bad; first: {skipped[0]})")
    return Dataset(str(source), fmt, good, skipped)


# ---------------------------------------------------------------- rendering

def to_examples(dataset: Dataset, tokenizer, template: Chosen | None = None) -> list[Example]:
    """Prompt/completion text per row. Alpaca and chat rows go through the run's chat template
    (the text the model is trained on is the text every consumer renders); text rows stay plain."""
    examples = []
    for row in dataset.rows:
        r = row.record
        if dataset.format == "text":
            examples.append(Example("", r["text"], row.where))
            continue
        if template is None:
            raise EdgetuneError(f"{dataset.source}: {dataset.format} rows need a chat template")
        messages = alpaca_messages(r, template.name) if dataset.format == "alpaca" else r["messages"]
        prompt = templates.render(template.jinja, messages[:-1], tokenizer, add_generation_prompt=True)
        full = templates.render(template.jinja, messages, tokenizer, add_generation_prompt=False)
        completion = templates.split_turn(prompt, full, template.turn_end, row.where)
        examples.append(Example(prompt, completion, row.where, messages[:-1], messages[-1]["content"]))
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
    p99: int
    max: int
    truncated: int  # rows longer than max_length
    responses_cut: int  # rows whose response loses some tokens at max_length
    responses_lost: int  # rows whose response loses every token (they train nothing)
    max_length: int
    histogram: list[tuple[int, int]]  # (bucket upper bound, count)
    lengths: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (prompt, whole row) tokens

    def summary(self) -> str:
        return (f"{self.count} rows, tokens p50 {self.p50} / p95 {self.p95} / p99 {self.p99} / max {self.max}; "
                f"at max_length {self.max_length}: {self.truncated} truncated, {self.responses_cut} responses cut"
                f"{f', {self.responses_lost} lost whole' if self.responses_lost else ''}")

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "lengths"}

    def cut_at(self, max_length: int) -> tuple[int, int]:
        """(responses cut partly or wholly, responses lost whole) if rows were cut at max_length."""
        cut = sum(1 for prompt, total in self.lengths if total > max_length)
        return cut, sum(1 for prompt, total in self.lengths if prompt >= max_length)

    def suggested_max_length(self) -> int:
        """The p99 length rounded up to a multiple of 32 (at least 64)."""
        return max(64, -(-self.p99 // 32) * 32)


def tokenize(examples: Iterable[Example], tokenizer, max_length: int, completion_only: bool = True) -> list[dict]:
    """input_ids + completion_mask per example, truncated to max_length. Templated rows carry their
    own BOS and turn end in the text; plain text rows get the tokenizer's BOS and EOS."""
    rows = []
    eos = tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if templates.adds_bos(tokenizer) else []
    for ex in examples:
        if ex.prompt:
            prompt_ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
            completion_ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = []
            completion_ids = bos + tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
            if eos is not None and completion_ids[-1:] != [eos]:
                completion_ids.append(eos)
        ids = prompt_ids + completion_ids
        mask = ([0] * len(prompt_ids) if completion_only else [1] * len(prompt_ids)) + [1] * len(completion_ids)
        kept = max(0, min(len(ids), max_length) - len(prompt_ids))
        rows.append({"input_ids": ids[:max_length], "completion_mask": mask[:max_length], "length": len(ids),
                     "prompt_tokens": len(prompt_ids), "response_tokens": len(completion_ids), "response_kept": kept})
    return rows


@dataclass
class Prepared:
    """A dataset ready to train on: rendered, split, tokenized and measured."""

    dataset: Dataset
    template: Chosen | None  # None for text data
    examples: list[Example]  # every row, in file order
    train: list[Example]
    eval: list[Example]
    train_rows: list[dict]  # tokenized; rows whose response was cut away entirely are left out
    eval_rows: list[dict]
    stats: TokenStats  # over all rows, before any was left out
    lost: int  # rows left out: nothing of their response fits in max_length

    def summary(self) -> str:
        ds = self.dataset
        msg = (f"{ds.source}: {ds.format}, {len(self.train_rows)} train / {len(self.eval_rows)} eval; "
               f"{self.stats.summary()}")
        if self.template is not None:
            msg += f"; template {self.template.name}: {self.template.reason}"
        if ds.skipped:
            msg += f"; skipped {len(ds.skipped)} bad rows (first: {ds.skipped[0]})"
        return msg


MAX_LOST_SHARE = 0.05  # more rows than this losing their whole response stops a run


def prepare(spec: DataSpec, tokenizer, seed: int = 0, base: str = "the base model",
            dataset: Dataset | None = None) -> Prepared:
    """Load, template, split and tokenize `spec`'s data for `tokenizer`. Stops with one line when
    more than 5% of rows would lose their whole response to max_length (unless the recipe allows
    it); such rows are never trained on."""
    ds = dataset or load_dataset(dataset_source(spec.path), spec.format, spec.on_bad_row, spec.columns)
    chosen = templates.choose(spec.template, tokenizer, base) if ds.format != "text" else None
    examples = to_examples(ds, tokenizer, chosen)
    train, evals = split(examples, spec.eval_split, seed)
    train_rows = tokenize(train, tokenizer, spec.max_length, spec.completion_only)
    eval_rows = tokenize(evals, tokenizer, spec.max_length, spec.completion_only)
    stats = token_stats(train_rows + eval_rows, spec.max_length)
    if stats.responses_lost > MAX_LOST_SHARE * stats.count and not spec.allow_lost_responses:
        raise EdgetuneError(
            f"{ds.source}: {stats.responses_lost} of {stats.count} rows lose their whole response at "
            f"data.max_length {spec.max_length} (p99 length {stats.p99}); set data.max_length to "
            f"{stats.suggested_max_length()} or data.allow_lost_responses: true")
    kept_train = [r for r in train_rows if r["response_kept"]]
    kept_eval = [r for r in eval_rows if r["response_kept"]]
    lost = len(train_rows) - len(kept_train) + len(eval_rows) - len(kept_eval)
    return Prepared(ds, chosen, examples, train, evals, kept_train, kept_eval, stats, lost)


def inspect(spec: DataSpec, base: str, on_event=ignore) -> Prepared:
    """Validate a dataset and measure it with a base model's tokenizer under its chat template.
    The CLI's `data inspect` and the TUI's dataset step both show this; it never stops on lost
    responses (it reports them)."""
    spec = dataclasses.replace(spec, path=spec.path or "demo", allow_lost_responses=True)
    ds = load_dataset(dataset_source(spec.path), spec.format, spec.on_bad_row, spec.columns)  # bad rows first: quick
    return prepare(spec, load_tokenizer(resolve_base(base, on_event)), base=base, dataset=ds)


def token_stats(rows: list[dict], max_length: int, buckets: int = 8) -> TokenStats:
    lengths = sorted(r["length"] for r in rows) or [0]
    top = max(lengths)
    width = max(1, -(-top // buckets))
    hist = [(width * (b + 1), sum(1 for n in lengths if width * b < n <= width * (b + 1))) for b in range(buckets)]

    def pct(q: float) -> int:
        return lengths[min(len(lengths) - 1, int(len(lengths) * q))]

    return TokenStats(
        count=len(rows), mean=sum(lengths) / len(lengths), p50=pct(0.5), p95=pct(0.95), p99=pct(0.99), max=top,
        truncated=sum(1 for n in lengths if n > max_length),
        responses_cut=sum(1 for r in rows if r.get("response_kept", 1) < r.get("response_tokens", 1)),
        responses_lost=sum(1 for r in rows if r.get("response_kept", 1) == 0),
        max_length=max_length, histogram=hist, lengths=[(r.get("prompt_tokens", 0), r["length"]) for r in rows],
    )
