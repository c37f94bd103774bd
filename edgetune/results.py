"""What each step of a run leaves, as types: plain dataclasses that round-trip through their JSON file.

train.json   TrainResult    how training went (method, steps over every resumed part, losses, tokens)
train_log.jsonl  TrainLogEntry  one logged step each: loss or eval loss, learning rate, tokens/s
quant.json   QuantResult    the importance matrix, the reference, every quantized file and the auto sweep
smoke.json   SmokeResult    every GGUF checked against the merged model, the base's answers, the task verdict
state.json   RunState       each step's fingerprint and time, and how the last attempt ended

The CLI, the TUI, the report and the scripts read these types, never raw keys. A file written by an
older edgetune may lack a field: fields added since have defaults; `read` names what it cannot read.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from edgetune.errors import EdgetuneError
from edgetune.fsutil import write_json
from edgetune.measure import metrics

R = TypeVar("R", bound="Record")


class Record:
    """JSON round-trip for a dataclass whose fields are plain values, lists, dicts and other Records."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], data: dict) -> R:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: _load(hints[k], v) for k, v in data.items() if k in names})

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """The record in `path`; an EdgetuneError naming the file when it is missing or unreadable."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise EdgetuneError(f"{path}: missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgetuneError(f"{path}: not valid JSON ({e})") from None
        except (TypeError, KeyError, ValueError) as e:
            raise EdgetuneError(f"{path}: not a {cls.__name__} this edgetune can read ({e}); "
                                "it may come from another version: rerun the step") from None


def _load(hint, value):
    """`value` from JSON as the annotated type: Records (also inside list/dict/Optional) are rebuilt."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _load(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        (item,) = typing.get_args(hint) or (object,)
        return [_load(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint) or (str, object)
        return {k: _load(item, v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    if hint is float and isinstance(value, (int, float)):
        return float(value)
    return value


# ---------------------------------------------------------------- train


@dataclass
class TrainResult(Record):
    method: str  # lora or qlora
    device: str
    dtype: str
    base: str  # as the recipe names it
    base_path: str  # the local folder it resolved to (merge and the base figures read it)
    trainable_params: int
    total_params: int
    steps: int  # optimizer steps, over every resumed part
    seconds: float  # training time, over every resumed part
    train_loss: float | None = None
    format: str = ""
    lost_rows: int = 0
    template: str | None = None
    train_rows: int = 0
    eval_rows: int = 0
    tokens: dict = field(default_factory=dict)  # edgetune.data.TokenStats.to_dict()
    eval_loss: float | None = None
    eval_perplexity: float | None = None
    parts: int = 1  # how many runs of the train step made it (1 + resumes)


@dataclass
class TrainLogEntry(Record):
    """One line of train_log.jsonl: what the trainer logged at a step (a train or an eval log)."""

    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None


def train_history(lines: list[str]) -> list[TrainLogEntry]:
    """The entries of train_log.jsonl's lines, in step order; unreadable lines are left out, and where a
    resumed run logged a step again, its last entry counts."""
    entries: dict[tuple[int, bool], TrainLogEntry] = {}
    for line in lines:
        try:
            data = json.loads(line)
            entry = TrainLogEntry.from_dict({k: v for k, v in data.items() if k == "step" or isinstance(v, (int, float))})
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
        if isinstance(entry.step, int) and (entry.loss is not None or entry.eval_loss is not None):
            entries[(entry.step, entry.eval_loss is not None)] = entry
    return [entries[k] for k in sorted(entries)]


# ---------------------------------------------------------------- quantize


@dataclass
class ImatrixInfo(Record):
    tokens: int
    note: str = ""  # why there is none (too few tokens); empty when there is one
    path: str | None = None
    file: str = ""
    dataset: str = ""
    rows: int = 0
    chunks: int = 0
    entries: int = 0
    seconds: float = 0.0


@dataclass
class LogitCheck(Record):
    """A GGUF's logits against the merged HF model's on the smoke test's rows: the smoke test's logit
    figures, made by the quantize step where it evaluates each file on those rows anyway."""

    rows: int  # the first this many held-out rows (smoke.prompts)
    finite: bool
    nmse: float
    perplexity: float
    prompt_tokens_per_s: float | None = None
    stamp: str = ""  # the file's size and modification time when measured: a file changed since is measured again


@dataclass
class QuantReference(Record):
    """The unquantized file every quantized one is measured against."""

    file: str
    perplexity: float
    accuracy: float | None
    positions: int
    rows: int
    answers: list[str] = field(default_factory=list)  # its greedy answers to the held-out prompts
    stopped_at_eos: int = 0
    logit_check: LogitCheck | None = None


@dataclass
class BaseFigures(Record):
    """The base model before fine-tuning, on the same held-out rows."""

    perplexity: float | None
    accuracy: float | None
    answers: list[str] = field(default_factory=list)
    stopped_at_eos: int | None = None  # of its answers, how many ended on a stop token
    row_nll: list[float] = field(default_factory=list)  # per held-out row: summed response NLL ...
    row_tokens: list[int] = field(default_factory=list)  # ... over this many tokens

    def perplexity_over(self, n: int) -> float | None:
        """Response perplexity over the first `n` held-out rows (None when not recorded per row)."""
        return metrics.perplexity_of(self.row_nll[:n], self.row_tokens[:n]) if self.row_tokens else None


@dataclass
class QuantFile(Record):
    """One quantized file (or an auto-sweep candidate, measured or not)."""

    label: str  # what names the file: Q4_K_M, Q4_K_M-EMB-Q8_0, ...-MIXED
    type: str  # the file type, or "mixed"
    embedding: str = "default"
    predicted_bytes: int | None = None  # llama.cpp's dry run (sweep candidates)
    status: str = ""
    path: str = ""
    file: str = ""
    bytes: int | None = None
    bits_per_weight: float | None = None
    seconds: float | None = None
    fallbacks: dict[str, int] = field(default_factory=dict)  # tensors that took another type, per type
    # measured against the reference
    mean_kld: float | None = None
    p99_kld: float | None = None
    top1: float | None = None
    positions: int = 0
    perplexity: float | None = None
    delta_ppl: float | None = None
    accuracy: float | None = None
    answers: list[str] = field(default_factory=list)
    stopped_at_eos: int = 0  # of its answers, how many stopped on an end-of-generation token
    gain_kept: float | None = None  # share of the fine-tune's loss gain (log perplexity) the file keeps
    gave_back: bool = False
    logit_check: LogitCheck | None = None
    misses: list[str] = field(default_factory=list)  # why it is outside the auto budget
    kept: bool = False
    recommended: bool = False
    # a per-tensor mix: what it was measured against and its verdict
    against: str | None = None
    against_kld: float | None = None
    won: bool = False
    verdict: str = ""
    types: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return self.mean_kld is not None

    @property
    def size(self) -> int:
        return self.bytes if self.bytes is not None else self.predicted_bytes or 0


@dataclass
class MixedInfo(Record):
    label: str
    against: str | None
    won: bool
    verdict: str
    types: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    mean_kld: float | None = None
    against_kld: float | None = None


@dataclass
class SweepResult(Record):
    budget: str
    met: bool
    recommended: str
    why: str
    left_out: list[str] = field(default_factory=list)
    mixed: MixedInfo | None = None


@dataclass
class QuantResult(Record):
    imatrix: ImatrixInfo | None = None
    reference: QuantReference | None = None
    base: BaseFigures | None = None
    hf: ModelAnswers | None = None  # the merged HF model on the smoke test's rows and prompts
    files: list[QuantFile] = field(default_factory=list)
    sweep: SweepResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # where the step's time went
    notes: list[str] = field(default_factory=list)  # what a reader of the files should know (grid_notes)

    def kept_labels(self) -> list[str]:
        """The labels the smoke step tests: the recommended file first."""
        kept = [f for f in self.files if f.kept]
        return [f.label for f in sorted(kept, key=lambda f: not f.recommended)]

    def recommended(self) -> QuantFile | None:
        return next((f for f in self.files if f.recommended), None)


# ---------------------------------------------------------------- smoke


@dataclass
class FileCheck(Record):
    """The smoke test of one GGUF: is it the trained model, as consumers run it?"""

    file: str
    path: str
    bytes: int
    bits_per_weight: float
    passed: bool
    problems: list[str] = field(default_factory=list)
    file_type: int | str | None = None
    finite: bool = True
    nmse: float = math.nan
    perplexity: float = math.nan
    hf_perplexity: float = math.nan
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s: float | None = None
    answers: list[str] = field(default_factory=list)
    stopped_at_eos: int = 0
    agreement: float = 0.0
    accuracy: float = 0.0
    empty_answers: int = 0
    tokenizer_mismatches: list[str] = field(default_factory=list)
    eos_id: int | None = None
    eos_matches: bool = True
    chat_template: bool = False
    chat_path: str = ""
    chat_answers: list[str] = field(default_factory=list)


@dataclass
class ModelAnswers(Record):
    """An HF model (the base, or the merged fine-tune) on the held-out prompts and rows."""

    answers: list[str]
    accuracy: float
    perplexity: float | None = None
    stopped_at_eos: int | None = None  # of its answers, how many ended on a stop token


@dataclass
class TaskVerdict(Record):
    """Did training help on the held-out rows? good / poor / no better than the base, and why."""

    verdict: str
    accuracy: list[float]  # base, fine-tuned
    perplexity: list[float | None]  # base, fine-tuned
    eval_loss: float | None = None
    reasons: list[str] = field(default_factory=list)


@dataclass
class SmokeResult(Record):
    prompts: list[str]
    expected: list[str]
    base: ModelAnswers
    hf: ModelAnswers
    files: list[FileCheck]
    task: TaskVerdict | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # where the step's time went

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.files)

    def failed(self) -> list[FileCheck]:
        return [f for f in self.files if not f.passed]


# ---------------------------------------------------------------- run state


@dataclass
class StepRecord(Record):
    """What one finished piece of work was made from: the pipeline's steps (state.json) and the batch's
    adapters (manifest.json) are skipped by the same rule, `done`."""

    fingerprint: str
    seconds: float = 0.0
    finished: float = 0.0  # unix time
    files: list[str] = field(default_factory=list)  # the outputs, where the caller does not know them

    def done(self, fingerprint: str, outputs: list[Path] | None = None) -> bool:
        """Made from the same inputs, and every output still there."""
        paths = [Path(p) for p in (self.files if outputs is None else outputs)]
        return self.fingerprint == fingerprint and all(p.exists() for p in paths)


@dataclass
class RunState(Record):
    """state.json: what each finished step was made from, and how the last attempt ended."""

    steps: dict[str, StepRecord] = field(default_factory=dict)
    outcome: str = ""  # running, done, failed, interrupted ("" before any attempt recorded one)
    error: str = ""  # the one line that ended a failed or interrupted attempt
    step: str = ""  # the step it ended in
    updated: float = 0.0  # unix time of the last change
    version: str = ""  # the edgetune that wrote it
