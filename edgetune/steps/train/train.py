"""Fine-tuning: QLoRA (NF4 + double quant, bf16 compute, paged AdamW) on CUDA, LoRA on the CPU.

Built on PEFT + TRL + transformers. Writes into the run folder:
  adapter/            PEFT adapter + tokenizer
  checkpoints/        trainer checkpoints (a rerun resumes from the last one)
  train_log.jsonl     one JSON object per logged step (loss, lr, eval_loss, tokens/s)
  train.json          summary: parameters, steps, final losses, perplexity, time
  tensorboard/        event files, with train.report_to: tensorboard (wandb/: wandb's offline run)
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import edgetune.threads as threads_mod
from edgetune.device import (
    Estimate,
    bf16_pays,
    cpu_bf16,
    cpu_threads,
    estimate_throughput,
    gradient_checkpointing,
)
from edgetune.errors import EdgetuneError
from edgetune.events import (
    Callback,
    Cancelled,
    CancelToken,
    Event,
    TrainMetrics,
    ignore,
)
from edgetune.fsutil import atomic_dir, is_main_process, write_json
from edgetune.inputs import data as data_mod
from edgetune.inputs import templates
from edgetune.inputs.base import load_tokenizer, resolve_base
from edgetune.inputs.models import load_causal_lm
from edgetune.inputs.recipe import Recipe, TrainSpec
from edgetune.results import TrainResult
from edgetune.runs import RunFolder
from edgetune.steps.quantize.sweep import check_embedding_types
from edgetune.steps.train.targets import describe, expert_parameters, left_out_of_all_linear, resolve_experts, resolve_targets


@dataclass
class Plan:
    method: str  # qlora | lora
    device: str  # cuda | cpu
    dtype: str  # bf16 | fp16 | fp32
    why: str = ""  # why this dtype, for the training log


def quiet_libraries() -> None:
    """Progress bars of datasets/transformers would garble the CLI and TUI; events replace them."""
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def plan(spec: TrainSpec, config=None) -> Plan:
    """Device auto: CUDA -> QLoRA in bf16 (fp16 where bf16 is missing); CPU -> LoRA in bf16 autocast where
    the CPU has bf16 matmul units (AVX512-BF16, AMX-BF16) and the model's layers are wide enough for them
    to pay (`config`, when known: see device.bf16_pays), else fp32. LoRA weights stay fp32 either way."""
    import torch

    cuda = torch.cuda.is_available()
    method = spec.method if spec.method != "auto" else ("qlora" if cuda else "lora")
    dtype, why = spec.dtype, f"{spec.dtype}: train.dtype"
    if dtype == "auto" and cuda:
        bf16 = torch.cuda.is_bf16_supported()
        dtype, why = ("bf16", "bf16: the GPU supports it") if bf16 else ("fp16", "fp16: the GPU has no bf16")
    elif dtype == "auto":
        ok, why = cpu_bf16()
        if ok and config is not None:
            ok, why = bf16_pays(config, why)
        dtype = "bf16" if ok else "fp32"
    return Plan(method, "cuda" if cuda else "cpu", dtype, why)


def _torch_dtype(name: str):
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_model(base: str, p: Plan, trust_remote_code: bool = False):
    """The base for training: 4-bit NF4 for QLoRA, 16/32-bit for LoRA."""
    import torch
    from transformers import BitsAndBytesConfig

    kwargs = dict(dtype=_torch_dtype(p.dtype), trust_remote_code=trust_remote_code)
    if p.device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        kwargs["attn_implementation"] = "flash_attention_2"  # varlen kernels: packing without cross-row attention
    if p.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if p.dtype != "fp16" else torch.float16,
        )
        kwargs["device_map"] = {"": _local_device(p)}
    model = load_causal_lm(base, **kwargs)
    if p.method == "qlora":
        keep_4bit_layout_trainable(model)
    return model


def _local_device(p: Plan):
    if p.device == "cuda":
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


def keep_4bit_layout_trainable(model) -> int:
    """On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for inference at the first
    no-grad forward, for good; backward through the repacked layout is silently wrong. Turn it off."""
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def build_datasets(recipe: Recipe, tokenizer, on_event: Callback = ignore):
    """Tokenized train/eval `datasets.Dataset`s and the prepared data they came from."""
    import datasets

    prepared = data_mod.prepare(recipe.data, tokenizer, recipe.train.seed, recipe.base)
    on_event(Event("data", "log", prepared.summary(),
                   data={"skipped": len(prepared.dataset.skipped), "format": prepared.dataset.format}))
    if prepared.lost:
        on_event(Event("data", "log", f"{prepared.lost} rows left out: their whole response is past "
                                      f"data.max_length {recipe.data.max_length}"))

    def to_ds(rows):
        return datasets.Dataset.from_dict({
            "input_ids": [r["input_ids"] for r in rows],
            "completion_mask": [r["completion_mask"] for r in rows],
        })

    train_ds = to_ds(prepared.train_rows)
    if len(train_ds) == 0:
        raise EdgetuneError(f"{prepared.dataset.source}: no training rows left after the eval split")
    eval_ds = to_ds(prepared.eval_rows) if prepared.eval_rows else None
    return train_ds, eval_ds, prepared


def store_template(tokenizer, prepared: data_mod.Prepared, generation_config) -> None:
    """Make the tokenizer (saved with the adapter, copied into the merged folder and the GGUF) carry
    the template the rows were rendered with, and make generation stop where a trained turn ends."""
    if prepared.template is not None:
        tokenizer.chat_template = prepared.template.jinja
        stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(prepared.template.turn_end)]
    else:  # text data: a template the model already has is kept, with its BOS made explicit
        if getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = templates.with_bos(tokenizer.chat_template, tokenizer)
        stops = [tokenizer.eos_token_id]
    stops = list(dict.fromkeys(t for t in stops if t is not None))
    generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    generation_config.pad_token_id = tokenizer.pad_token_id


TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
WANDB_HOST = ("api.wandb.ai", 443)
USER_WANDB_MODE = os.environ.get("WANDB_MODE")  # as the user set it; otherwise each run decides


def tracker_problem(report_to: str) -> str | None:
    """Why train.report_to cannot work on this machine (its package is missing), or None."""
    modules = TRACKER_MODULES.get(report_to, ())
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        return f"{report_to} is not installed: pip install 'edgetune[{report_to}]'"
    return None


def tracker_args(t: TrainSpec, folder: RunFolder, on_event: Callback = ignore) -> dict:
    """The trainer's arguments for train.report_to, as transformers makes them: tensorboard writes its
    event files into the run folder; wandb keeps its run there too and runs offline (WANDB_MODE=offline,
    `wandb sync` uploads it later) unless it has a key and reaches its server. A missing package is one
    line before any training."""
    if t.report_to == "none":
        return {"report_to": "none"}
    problem = tracker_problem(t.report_to)
    if problem:
        raise EdgetuneError(f"train.report_to: {problem}")
    if t.report_to == "tensorboard":
        on_event(Event("train", "log", f"tensorboard: event files in {tensorboard_dir(folder)}"))
        return {"report_to": ["tensorboard"]}
    os.environ["WANDB_DIR"] = str(folder.dir)  # its files: runs/<name>/wandb/
    os.environ.setdefault("WANDB_PROJECT", "edgetune")
    os.environ.setdefault("WANDB_SILENT", "true")  # its banner would garble the TUI; the line below says where
    os.environ.setdefault("WANDB_CONSOLE", "off")  # and it leaves the terminal's streams alone
    mode = USER_WANDB_MODE or ("online" if wandb_online() else "offline")
    os.environ["WANDB_MODE"] = mode
    later = f"; upload later: wandb sync {folder.wandb}/offline-run-*" if mode == "offline" else ""
    on_event(Event("train", "log", f"wandb: {mode}, project {os.environ['WANDB_PROJECT']}, run {folder.name} "
                                   f"in {folder.wandb}{later}"))
    return {"report_to": ["wandb"], "run_name": folder.name}


def tensorboard_dir(folder: RunFolder) -> Path:
    """Where tensorboard's event files go: the run folder's, unless TENSORBOARD_LOGGING_DIR says otherwise."""
    return Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or folder.tensorboard)


def attach_trackers(trainer, folder: RunFolder) -> None:
    """The trainer's tracker callbacks (made from report_to) log into the run folder, after edgetune's own
    callback has added tokens/s to the logs."""
    for callback in list(trainer.callback_handler.callbacks):
        name = type(callback).__name__
        if name == "TensorBoardCallback":
            callback.logging_dir = str(tensorboard_dir(folder))  # transformers 5: else checkpoints/runs/<date>
        if name in ("TensorBoardCallback", "WandbCallback"):
            trainer.remove_callback(callback)
            trainer.add_callback(callback)


def wandb_online(timeout: float = 2.0) -> bool:
    """wandb can log online: it has an API key (WANDB_API_KEY or a `wandb login` in ~/.netrc) and its
    server answers. Otherwise it would ask for a login or wait on the network."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "")).hostname or WANDB_HOST[0]
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.is_file() and host in netrc.read_text(errors="ignore"))
    if not has_key:
        return False
    try:
        socket.create_connection((host, WANDB_HOST[1]), timeout=timeout).close()
        return True
    except OSError:
        return False


def _progress_callback(on_event: Callback, cancel: CancelToken | None, log_path: Path, tokens_per_step: float):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.first_step = 0
            self.nan = False

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.first_step = state.global_step
            on_event(Event("train", "start", f"training {state.max_steps} steps", step=state.global_step,
                           total=state.max_steps))

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_evaluate = False  # train() evaluates once after the loop: not twice at the last step
            if cancel is not None and cancel.cancelled:
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            elapsed = time.time() - (self.t0 or time.time())
            done = state.global_step - self.first_step
            rate = done / elapsed if elapsed > 0 and done else None
            record = {"step": state.global_step, "epoch": state.epoch, **{k: v for k, v in logs.items()
                                                                          if isinstance(v, (int, float))}}
            if rate:
                record["tokens_per_s"] = rate * tokens_per_step * args.world_size
                logs["tokens_per_s"] = record["tokens_per_s"]  # the trackers' callbacks log after this one
            # Other ranks of a multi-process launch keep their own log, to check they agree.
            path = log_path if state.is_world_process_zero else log_path.with_suffix(f".rank{args.process_index}.jsonl")
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            loss = logs.get("loss")
            if loss is not None and not math.isfinite(loss):
                self.nan = True
                control.should_training_stop = True
            on_event(TrainMetrics(
                step=state.global_step, total=state.max_steps, loss=loss,
                eval_loss=logs.get("eval_loss"), lr=logs.get("learning_rate"),
                tokens_per_s=record.get("tokens_per_s"),
                eta_s=(state.max_steps - state.global_step) / rate if rate else None,
                memory_mb=_memory_mb(),
            ))

    return Progress()


def _memory_mb() -> float:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:
        return 0.0


def train(recipe: Recipe, run_dir: Path, on_event: Callback = ignore, cancel: CancelToken | None = None) -> Path:
    """Fine-tune `recipe.base` on `recipe.data`; return the adapter folder. Resumes from checkpoints."""
    import torch
    from transformers import AutoConfig
    from transformers.trainer_callback import PrinterCallback

    from edgetune.steps.train.sft import Trainer  # subclasses TRL's SFTTrainer: importing it loads TRL

    # The plan for this machine, and the data.
    quiet_libraries()
    folder = RunFolder(run_dir, recipe.name)
    folder.dir.mkdir(parents=True, exist_ok=True)
    t = recipe.train
    tracking = tracker_args(t, folder, on_event)  # a missing package: before any loading
    base = resolve_base(recipe.base, on_event, allow_pickle=t.allow_pickle)
    config = AutoConfig.from_pretrained(base, trust_remote_code=t.trust_remote_code)
    check_embedding_types(recipe, config.get_text_config().hidden_size)  # before minutes of training
    p = plan(t, config)
    if p.method == "qlora" and p.device == "cpu":
        on_event(Event("train", "log", "QLoRA on the CPU: slow; bitsandbytes NF4 on CPU, for testing"))
    tokenizer = load_tokenizer(base, t.trust_remote_code)
    train_ds, eval_ds, prepared = build_datasets(recipe, tokenizer, on_event)

    # The model with its adapters, and the trainer.
    torch.manual_seed(t.seed)
    model, checkpointing = lora_model(recipe, base, p, train_ds, on_event)
    steps_per_epoch = max(1, math.ceil(len(train_ds) / (t.batch_size * t.grad_accum)))
    planned_steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    tokens_per_step = sum(len(x) for x in train_ds["input_ids"]) / steps_per_epoch
    args = sft_config(recipe, p, folder.checkpoints, planned_steps, evaluate=eval_ds is not None,
                      gradient_checkpointing=checkpointing,
                      packing=use_packing(recipe.data.packing, p, model.config), **tracking)
    progress = _progress_callback(on_event, cancel, folder.train_log, tokens_per_step)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, callbacks=[progress])
    trainer.remove_callback(PrinterCallback)  # our events are the progress display
    attach_trackers(trainer, folder)
    on_event(Event("train", "log", trainer.check_loss_head()))

    # Training, from the last checkpoint when there is one.
    trained, parts = train_resuming(trainer, folder, on_event)
    if progress.nan:
        raise EdgetuneError(f"{run_dir}: training stopped, the loss became NaN/inf at step "
                            f"{trainer.state.global_step} (try a lower train.lr)")
    if cancel is not None and cancel.cancelled:
        raise Cancelled(f"training cancelled at step {trainer.state.global_step}; rerun to resume")

    # The result: evaluated, then the adapter and train.json written.
    trainable, total = model.get_nb_trainable_parameters()
    result = TrainResult(
        method=p.method, device=p.device, dtype=p.dtype, base=recipe.base, base_path=base,
        trainable_params=trainable, total_params=total, steps=trainer.state.global_step,
        train_loss=trained.training_loss, seconds=round(sum(part["seconds"] for part in parts), 1),
        parts=len(parts), format=prepared.dataset.format,
        lost_rows=prepared.lost, template=prepared.template.name if prepared.template else None,
        train_rows=len(train_ds), eval_rows=len(eval_ds) if eval_ds is not None else 0,
        tokens=prepared.stats.to_dict())
    if eval_ds is not None:
        evaluate(trainer, result, on_event)
    if not trainer.is_world_process_zero():
        return folder.adapter
    save_adapter(trainer, tokenizer, prepared, folder)
    result.write(folder.train_json)
    on_event(Event("train", "done", f"adapter saved: {folder.adapter}", data=result.to_dict()))
    return folder.adapter


def lora_model(recipe: Recipe, base: str, p: Plan, train_ds, on_event: Callback = ignore):
    """The base loaded as planned, with LoRA adapters on its targets, and whether to checkpoint
    gradients. Logs the machine's setup, the speed to expect, the targets and what trains."""
    from peft import prepare_model_for_kbit_training

    t = recipe.train
    model = load_model(base, p, t.trust_remote_code)
    checkpointing = machine_setup(p, t, model.config, max(len(x) for x in train_ds["input_ids"]), on_event,
                                  recipe.threads)
    expected = expected_speed(recipe, p, model.config, train_ds)
    on_event(Event("train", "log", expected.line(), data={"expected_tokens_per_s": expected.tokens_per_s}))
    if p.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return add_lora(model, p, t, on_event), checkpointing


def expected_speed(recipe: Recipe, p: Plan, config, train_ds) -> Estimate:
    """Expected tokens/s on these rows (the log line that training's own speed is read against)."""
    import torch

    lengths = [len(x) for x in train_ds["input_ids"]]
    loss_tokens = sum(sum(m) for m in train_ds["completion_mask"]) if recipe.data.completion_only else sum(lengths)
    return estimate_throughput(config, p.device, p.dtype, p.why, recipe.train.batch_size,
                               round(sum(lengths) / len(lengths)), loss_tokens / max(1, sum(lengths)),
                               n_threads=torch.get_num_threads() if p.device == "cpu" else 0)


def add_lora(model, p: Plan, t: TrainSpec, on_event: Callback = ignore):
    """The PEFT model: LoRA on the modules (and expert parameters) train.targets and train.experts name."""
    from peft import LoraConfig, get_peft_model

    from edgetune.steps.train import lora_cpu  # imports torch

    targets = resolve_targets(model, t.targets)
    left_out = left_out_of_all_linear(model) if t.targets == "all-linear" else []
    experts = resolve_experts(model, t.experts)
    line = describe(targets, left_out, experts, 0 if t.experts else len(expert_parameters(model)))
    on_event(Event("train", "log", f"targets={t.targets}: {line}", data={"targets": targets + experts}))
    lora = LoraConfig(r=t.rank, lora_alpha=t.alpha, lora_dropout=t.dropout, bias="none", task_type="CAUSAL_LM",
                      target_modules=targets, target_parameters=experts or None)
    model = get_peft_model(model, lora)
    if p.device == "cpu":
        for line in lora_cpu.speed_up(model, autocast_bf16=p.dtype == "bf16"):
            on_event(Event("train", "log", line))
    trainable, total = model.get_nb_trainable_parameters()
    on_event(Event("train", "log", f"{p.method} on {p.device} ({p.dtype}), r={t.rank} alpha={t.alpha} "
                   f"targets={t.targets}: trainable {trainable:,} / {total:,} params "
                   f"({100 * trainable / total:.2f}%)", data={"trainable": trainable, "total": total}))
    return model


def sft_config(recipe: Recipe, p: Plan, output_dir: Path, planned_steps: int, evaluate: bool, **decided):
    """TRL's arguments from the recipe and the plan; `decided` on the way: gradient_checkpointing,
    packing and the trackers' arguments."""
    from trl import SFTConfig

    t = recipe.train
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of all steps
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=min(t.save_steps, planned_steps),
        save_total_limit=2,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=min(t.eval_steps, planned_steps),
        bf16=p.dtype == "bf16",
        fp16=p.dtype == "fp16",
        use_cpu=p.device == "cpu",
        # LoRA: torch's fused AdamW (one kernel for all adapter tensors, not ~10 ops per tensor per step).
        optim="paged_adamw_32bit" if p.method == "qlora" and p.device == "cuda" else "adamw_torch_fused",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        max_length=recipe.data.max_length,
        # Unpacked: edgetune.sft.Trainer cuts batches of similar lengths and shuffles them (little padding,
        # no long-to-short curriculum); packed: random rows.
        train_sampling_strategy="random",
        completion_only_loss=recipe.data.completion_only,
        seed=t.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
        **decided,
    )


def train_resuming(trainer, folder: RunFolder, on_event: Callback = ignore):
    """trainer.train(), from the last checkpoint when there is one; its output and the parts of
    training so far. Every part (a first run, then each resume) is counted in train_parts.json: its
    time and its last step."""
    resume = _last_checkpoint(folder.checkpoints)
    if resume:
        on_event(Event("train", "log", f"resuming from {resume.name}"))
    parts = _read_parts(folder.train_parts) if resume else []
    t0 = time.time()
    try:
        trained = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except KeyboardInterrupt:  # Ctrl-C: say where; a rerun resumes from the last checkpoint
        _write_parts(folder.train_parts, parts + [{"seconds": round(time.time() - t0, 1),
                                                   "step": trainer.state.global_step}])
        raise KeyboardInterrupt(f"interrupted at step {trainer.state.global_step} of {trainer.state.max_steps}"
                                + (f" (last checkpoint: step {last.name.split('-')[-1]})"
                                   if (last := _last_checkpoint(folder.checkpoints)) else "")) from None
    parts.append({"seconds": round(time.time() - t0, 1), "step": trainer.state.global_step})
    _write_parts(folder.train_parts, parts)
    return trained, parts


def evaluate(trainer, result: TrainResult, on_event: Callback = ignore) -> None:
    """The eval loss and perplexity after training, into `result`."""
    metrics = trainer.evaluate()
    result.eval_loss = metrics["eval_loss"]
    result.eval_perplexity = math.exp(min(metrics["eval_loss"], 50))
    on_event(TrainMetrics(kind="metric", message=f"eval loss {result.eval_loss:.4f}, perplexity "
                          f"{result.eval_perplexity:.2f}", eval_loss=result.eval_loss))


def save_adapter(trainer, tokenizer, prepared: data_mod.Prepared, folder: RunFolder) -> None:
    """The adapter with the tokenizer and generation config it was trained with, whole or not at all."""
    model = trainer.model
    with atomic_dir(folder.adapter) as tmp:
        model.save_pretrained(tmp)
        store_template(tokenizer, prepared, model.generation_config)
        tokenizer.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)


def estimate(recipe: Recipe, stats: data_mod.TokenStats | None = None) -> Estimate:
    """Expected tokens/s of training `recipe` on this machine, before any run: the base's config, the
    planned device and dtype, and the batch shape of the data (`stats` from a dataset check; without
    it, rows of data.max_length with loss on every token, which errs low)."""
    from transformers import AutoConfig

    t = recipe.train
    config = AutoConfig.from_pretrained(resolve_base(recipe.base, allow_pickle=t.allow_pickle),
                                         trust_remote_code=t.trust_remote_code)
    p = plan(t, config)
    seq_len, loss_share = recipe.data.max_length, 1.0
    if stats is not None and stats.lengths:
        rows = [(min(prompt, recipe.data.max_length), min(total, recipe.data.max_length))
                for prompt, total in stats.lengths]
        seq_len = max(1, round(sum(total for _, total in rows) / len(rows)))
        if recipe.data.completion_only:
            loss_share = sum(total - prompt for prompt, total in rows) / max(1, sum(total for _, total in rows))
    return estimate_throughput(config, p.device, p.dtype, p.why, t.batch_size, seq_len, loss_share,
                               n_threads=recipe.threads)


def machine_setup(p: Plan, t: TrainSpec, config, longest_row: int, on_event: Callback = ignore,
                  threads: int = 0) -> bool:
    """Threads (CPU: `threads` when set, else OMP_NUM_THREADS when set, else one per physical core
    that other processes leave free: edgetune.threads) and gradient checkpointing; logs the device,
    dtype, threads and checkpointing with their reasons. Returns whether to checkpoint."""
    import torch

    if p.device == "cpu":
        choice = cpu_threads(threads)
        threads_mod.set_torch_threads(choice.threads)
        threads_mod.log_choice("train", choice, on_event, "threads")
        where = f"cpu, {choice.threads} thread{'s' if choice.threads != 1 else ''}"
    else:
        where = f"{p.device}, {torch.cuda.get_device_name(_local_device(p))}"
    dtype_bytes = 4 if p.dtype == "fp32" else 2
    on, why = gradient_checkpointing(t.gradient_checkpointing, config, t.batch_size, longest_row, dtype_bytes, p.device)
    on_event(Event("train", "log", f"{where}; {p.why}; {why}",
                   data={"device": p.device, "dtype": p.dtype, "gradient_checkpointing": on}))
    return on


def use_packing(setting: str, p: Plan, config=None) -> bool:
    """Padding-free packing pays off only with varlen attention kernels (flash-attention on CUDA);
    on the CPU it turns each batch into one long sequence with quadratic attention. Models with
    linear-attention layers (Qwen3.5's delta-net) are never packed: transformers' delta-net and its
    causal conv ignore row boundaries, so each row would start from the state of the one before."""
    text = config.get_text_config() if config is not None else None
    if "linear_attention" in (getattr(text, "layer_types", None) or []):
        if setting == "true":
            raise EdgetuneError("data.packing: true cannot train this model: its linear-attention layers would carry "
                                "state from one packed row into the next; use packing: auto or false")
        return False
    if setting != "auto":
        return setting == "true"
    return p.device == "cuda" and importlib.util.find_spec("flash_attn") is not None


def _read_parts(ledger: Path) -> list[dict]:
    try:
        parts = json.loads(ledger.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [p for p in parts if isinstance(p, dict) and isinstance(p.get("seconds"), (int, float))] \
        if isinstance(parts, list) else []


def _write_parts(ledger: Path, parts: list[dict]) -> None:
    if is_main_process() and ledger.parent.is_dir():
        write_json(ledger, parts)


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    done = [d for d in ckpt_dir.glob("checkpoint-*") if (d / "trainer_state.json").is_file()]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)
