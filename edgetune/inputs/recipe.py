"""A recipe: everything a run needs, as one YAML file. Defaults are the usual QLoRA starting point
(r 16, alpha 32, lr 2e-4, 3 epochs, effective batch 16).

Loading checks every key and type and names the offending field; the resolved recipe is written
into the run folder, so `edgetune run --recipe runs/<name>/recipe.yaml` replays a run.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn

import gguf
import yaml

from edgetune.convert.filetypes import DIRECT_TYPES, FILE_TYPES
from edgetune.errors import EdgetuneError
from edgetune.inputs.templates import CHOICES as TEMPLATE_CHOICES

# train.targets presets (steps/train/targets.py resolves them on the model): the leaf names of each
# family's projections, fused ones included; "all-linear" is every linear layer of the decoder.
# Qwen3.5's delta-net layers count as attention: in_proj_qkv (fused q, k, v), in_proj_z (output
# gate, as the gate half of its full attention's q_proj) and out_proj.
TARGET_PRESETS = {
    "qv": ["q_proj", "v_proj", "qkv_proj", "in_proj_qkv"],
    "attn": ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "in_proj_qkv", "in_proj_z", "out_proj"],
    "all-linear": "all-linear",
}


@dataclass
class DataSpec:
    path: str = "demo"  # "demo", a local file, or a datasets hub id
    format: str = "auto"  # auto | alpaca | chat | text
    eval_split: float = 0.1
    max_length: int = 512
    on_bad_row: str = "error"  # error | skip
    completion_only: bool = True  # loss on the response only
    # auto | model | alpaca | chatml | gemma | llama3 | a .jinja file (see edgetune.templates)
    template: str = "auto"
    allow_lost_responses: bool = False  # run even when > 5% of responses do not fit in max_length
    # auto: pack rows padding-free on CUDA (flash-attention varlen kernels make it cheap);
    # elsewhere pad batches of similar-length rows (packing costs quadratic attention on CPU).
    packing: str = "auto"  # auto | true | false
    # The file's own names, as LLaMA-Factory's dataset_info: {instruction: question, output: answer};
    # chat: {messages: conversations, role_tag: from, content_tag: value, user_tag: human, assistant_tag: gpt}
    columns: dict[str, str] = field(default_factory=dict)


# data.columns keys: the columns a row's fields come from, then the names inside each chat message.
COLUMN_FIELDS = ("instruction", "input", "output", "system", "messages", "text")
MESSAGE_TAGS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag")


@dataclass
class TrainSpec:
    method: str = "auto"  # auto (CUDA -> qlora, CPU -> lora) | qlora | lora
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = "all-linear"  # qv | attn | all-linear | comma-separated module names
    # Mixture-of-experts bases: also adapt every expert's projections (stacked 3-D weights, one LoRA
    # pair per expert; PEFT allows no dropout on them, so dropout must be 0). The router never is.
    experts: bool = False
    lr: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 4  # effective batch 16
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    max_grad_norm: float = 0.3
    # auto: off when the estimated activations fit comfortably in free RAM/VRAM (the training log says which)
    gradient_checkpointing: str = "auto"  # auto | true | false
    save_steps: int = 50
    eval_steps: int = 50
    logging_steps: int = 5
    seed: int = 0
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    trust_remote_code: bool = False
    allow_pickle: bool = False  # load a pickle-only base (weights_only=True, copied as safetensors)
    # the experiment tracker the trainer logs to (transformers' report_to): tensorboard writes event files
    # under runs/<name>/tensorboard/ (pip install edgetune[tensorboard]); wandb runs offline without a network
    report_to: str = "none"  # none | tensorboard | wandb


REPORT_TO = ("none", "tensorboard", "wandb")
AUTO_TYPES = [name for name, t in FILE_TYPES.items() if t.swept]


@dataclass
class ExportSpec:
    outtype: str = "f16"  # the unquantized GGUF: f32 | f16 | bf16 | q8_0
    # quant types to write, or [auto]: sweep auto_types and keep the smallest file within the budget
    quants: list[str] = field(default_factory=lambda: ["Q8_0", "Q4_K_M"])
    imatrix: bool = True  # importance matrix from the training rows for every quantized file
    imatrix_tokens: int = 200_000  # training tokens it is computed on (fewer when the set is smaller)
    auto_types: list[str] = field(default_factory=lambda: list(AUTO_TYPES))
    # token-embedding / output tensor types tried with each type ("default": llama.cpp's choice)
    auto_embedding_types: list[str] = field(default_factory=lambda: ["default", "Q4_0"])
    auto_min_top1: float = 0.98  # budget: share of next tokens whose top-1 matches the F16 file
    auto_max_accuracy_drop: float = 0.01  # budget: held-out exact-match accuracy below the F16 file's
    auto_max_mib: float = 0.0  # budget: file size limit (0: none)
    auto_keep_all: bool = False  # keep every file of the sweep, not only the recommended one
    # also build per-tensor mixed types (edgetune.mixed) at the recommended file's size; kept if closer to F16
    auto_mixed: bool = False


@dataclass
class SmokeSpec:
    prompts: int = 8  # held-out prompts answered by every GGUF
    max_tokens: int = 48
    threads: int = 0  # llama.cpp threads of the quantize measurements and the smoke test (0: the recipe's threads)


@dataclass
class Recipe:
    name: str = "run"
    base: str = "demo"  # demo | gemma3-270m | HF folder | .gguf file | hub id
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    smoke: SmokeSpec = field(default_factory=SmokeSpec)
    runs_dir: str = "runs"
    # threads of every heavy step (0: chosen per step from the CPUs that are free, edgetune.threads)
    threads: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise EdgetuneError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise EdgetuneError(f"{where}.{key}: unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, where)
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise EdgetuneError(f"{where}: expected a mapping such as {{instruction: question}}, got {value!r}")
        return {str(k): _coerce(typing.get_args(hint)[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise EdgetuneError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(typing.get_args(hint)[0], v, where) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise EdgetuneError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EdgetuneError(f"{where}: expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML reads 2e-4 as a string
            try:
                value = float(value)
            except ValueError:
                raise EdgetuneError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EdgetuneError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool):  # packing: true/false
            return str(value).lower()
        if not isinstance(value, (str, int, float)):
            raise EdgetuneError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def validate(r: Recipe, where: str = "recipe") -> Recipe:
    """Reject values that cannot work, naming the field."""
    def bad(field_name: str, why: str):
        raise EdgetuneError(f"{where}: {field_name} {why}")

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", r.name):
        bad("name", f"{r.name!r} must be letters, digits, '.', '_' or '-' (it names the run folder)")
    _validate_data(r.data, bad)
    _validate_train(r.train, bad, where)
    _validate_export(r.export, bad)
    if r.smoke.prompts < 0 or r.smoke.max_tokens < 1:
        bad("smoke", "prompts must be >= 0 and max_tokens >= 1")
    if r.threads < 0:
        bad("threads", f"{r.threads} must be >= 0 (0: as many as there are CPUs free)")
    if r.smoke.threads < 0:
        bad("smoke.threads", f"{r.smoke.threads} must be >= 0 (0: the recipe's threads)")
    return r


def _validate_data(d: DataSpec, bad: Callable[[str, str], NoReturn]) -> None:
    if d.format not in ("auto", "alpaca", "chat", "text"):
        bad("data.format", f"{d.format!r} is not one of auto, alpaca, chat, text")
    if not 0 <= d.eval_split < 1:
        bad("data.eval_split", f"{d.eval_split} must be in [0, 1)")
    if d.max_length < 16:
        bad("data.max_length", f"{d.max_length} must be at least 16")
    if d.packing not in ("auto", "true", "false"):
        bad("data.packing", f"{d.packing!r} must be auto, true or false")
    if d.template not in TEMPLATE_CHOICES and not d.template.endswith(".jinja"):
        bad("data.template", f"{d.template!r} is not one of {', '.join(TEMPLATE_CHOICES)} or a .jinja file")
    for key, column in d.columns.items():
        if key not in COLUMN_FIELDS + MESSAGE_TAGS:
            bad(f"data.columns.{key}", f"is not one of {', '.join(COLUMN_FIELDS + MESSAGE_TAGS)}")
        if not column.strip():
            bad(f"data.columns.{key}", "must name a column (or a message key or role), not be empty")
    if d.on_bad_row not in ("error", "skip"):
        bad("data.on_bad_row", f"{d.on_bad_row!r} must be error or skip")


def _validate_train(t: TrainSpec, bad: Callable[[str, str], NoReturn], where: str) -> None:
    if t.method not in ("auto", "qlora", "lora"):
        bad("train.method", f"{t.method!r} is not one of auto, qlora, lora")
    if t.rank < 1:
        bad("train.rank", f"{t.rank} must be at least 1")
    if t.alpha <= 0:
        bad("train.alpha", f"{t.alpha} must be positive")
    if not 0 <= t.dropout < 1:
        bad("train.dropout", f"{t.dropout} must be in [0, 1)")
    if not 0 < t.lr < 1:
        bad("train.lr", f"{t.lr} must be in (0, 1)")
    if t.epochs <= 0 and t.max_steps <= 0:
        bad("train.epochs", f"{t.epochs} must be positive (or set max_steps)")
    for name in ("batch_size", "grad_accum", "save_steps", "eval_steps", "logging_steps"):
        if getattr(t, name) < 1:
            bad(f"train.{name}", f"{getattr(t, name)} must be at least 1")
    if t.scheduler not in ("cosine", "linear", "constant", "constant_with_warmup"):
        bad("train.scheduler", f"{t.scheduler!r} is not one of cosine, linear, constant, constant_with_warmup")
    if not 0 <= t.warmup_ratio < 1:
        bad("train.warmup_ratio", f"{t.warmup_ratio} must be in [0, 1)")
    if t.dtype not in ("auto", "bf16", "fp16", "fp32"):
        bad("train.dtype", f"{t.dtype!r} is not one of auto, bf16, fp16, fp32")
    if t.gradient_checkpointing not in ("auto", "true", "false"):
        bad("train.gradient_checkpointing", f"{t.gradient_checkpointing!r} must be auto, true or false")
    if t.report_to not in REPORT_TO:
        bad("train.report_to", f"{t.report_to!r} is not one of {', '.join(REPORT_TO)}")
    if t.max_grad_norm <= 0:
        bad("train.max_grad_norm", f"{t.max_grad_norm} must be positive")
    target_modules(t.targets, where)
    if t.experts and t.dropout:
        bad("train.dropout", f"{t.dropout} must be 0 with train.experts: true (PEFT's LoRA on stacked expert "
                             "weights has no dropout)")


def _validate_export(e: ExportSpec, bad: Callable[[str, str], NoReturn]) -> None:
    """Also upper-cases the quant type names (auto alone stays auto)."""
    if e.outtype.upper() not in DIRECT_TYPES:
        bad("export.outtype", f"{e.outtype!r} is not one of {', '.join(t.outtype for t in DIRECT_TYPES.values())}")
    if [q.lower() for q in e.quants] == ["auto"]:
        e.quants = ["auto"]
    else:
        for q in e.quants:
            if q.upper() not in FILE_TYPES:
                bad("export.quants", f"{q!r} is not one of {', '.join(FILE_TYPES)} (or auto, alone)")
        e.quants = [q.upper() for q in e.quants]
    for q in e.auto_types:
        if q.upper() not in FILE_TYPES or FILE_TYPES[q.upper()].unquantized:
            quantized = ", ".join(n for n, t in FILE_TYPES.items() if not t.unquantized)
            bad("export.auto_types", f"{q!r} is not a quantized type ({quantized})")
    e.auto_types = [q.upper() for q in e.auto_types]
    for q in e.auto_embedding_types:
        if q.lower() != "default" and q.upper() not in gguf.GGMLQuantizationType.__members__:
            bad("export.auto_embedding_types", f"{q!r} is not default or a ggml tensor type (Q8_0, Q6_K, Q4_0, ...)")
    if not e.auto_types or not e.auto_embedding_types:
        bad("export.auto_types", "and auto_embedding_types must not be empty")
    if e.imatrix_tokens < 1:
        bad("export.imatrix_tokens", f"{e.imatrix_tokens} must be at least 1")
    if not 0 <= e.auto_min_top1 <= 1:
        bad("export.auto_min_top1", f"{e.auto_min_top1} must be in [0, 1]")
    if not 0 <= e.auto_max_accuracy_drop <= 1:
        bad("export.auto_max_accuracy_drop", f"{e.auto_max_accuracy_drop} must be in [0, 1]")
    if e.auto_max_mib < 0:
        bad("export.auto_max_mib", f"{e.auto_max_mib} must be >= 0 (0: no limit)")


MIN_STEPS = 30  # fewer optimizer steps than this rarely teach a new format


def train_rows(rows: int, eval_split: float) -> int:
    """How many of `rows` are trained on after the held-out split (as edgetune.data.split cuts it)."""
    held = round(rows * eval_split)
    if eval_split > 0 and held == 0 and rows > 1:
        held = 1
    return rows - held


def optimizer_steps(t: TrainSpec, rows: int) -> int:
    """The optimizer steps training `rows` rows takes under `t` (as train.py plans them)."""
    if t.max_steps > 0:
        return t.max_steps
    return math.ceil(max(1, math.ceil(rows / (t.batch_size * t.grad_accum))) * t.epochs)


def steps_advice(t: TrainSpec, rows: int) -> str | None:
    """One line when `t` gives `rows` training rows too few optimizer steps to learn, proposing a
    batch size (and epochs, for very few rows) that gives enough; None when the plan is fine."""
    steps = optimizer_steps(t, rows)
    if steps >= MIN_STEPS or rows < 1:
        return None
    plan = (f"train.max_steps {t.max_steps}" if t.max_steps > 0 else
            f"batch {t.batch_size} x accum {t.grad_accum}, {t.epochs:g} epochs")
    line = f"{rows} training rows at {plan} give only {steps} optimizer steps (fewer than {MIN_STEPS} rarely learn); "
    if t.max_steps > 0:
        return line + f"set train.max_steps to {MIN_STEPS} or more"
    batch = t.batch_size
    while batch >= 1:
        better = dataclasses.replace(t, batch_size=batch, grad_accum=1)
        if optimizer_steps(better, rows) >= MIN_STEPS:
            return line + (f"try train.batch_size {batch} with train.grad_accum 1 "
                           f"({optimizer_steps(better, rows)} steps)")
        batch //= 2
    epochs = math.ceil(MIN_STEPS / rows)
    return line + (f"try train.batch_size 1 with train.grad_accum 1 and train.epochs {epochs} "
                   f"({optimizer_steps(dataclasses.replace(t, batch_size=1, grad_accum=1, epochs=epochs), rows)} steps)")


def target_modules(targets: str, where: str = "recipe") -> list[str] | str:
    """A preset's leaf names (or "all-linear"), or the listed module names; checks the syntax only."""
    if targets in TARGET_PRESETS:
        return TARGET_PRESETS[targets]
    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names or not all(re.fullmatch(r"[A-Za-z0-9_.]+", n) for n in names):
        raise EdgetuneError(f"{where}: train.targets {targets!r} must be qv, attn, all-linear or module names")
    return names


def from_dict(values: dict, where: str = "recipe") -> Recipe:
    return validate(_build(Recipe, values or {}, where), where)


def load(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"{path}: recipe file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise EdgetuneError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return from_dict(values or {}, str(path))


def demo() -> Recipe:
    """The built-in demo recipe (recipes/demo.yaml in the checkout)."""
    path = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"
    if not path.is_file():
        raise EdgetuneError(f"{path}: the demo recipe is missing (install edgetune from its checkout: pip install -e .)")
    return load(path)
