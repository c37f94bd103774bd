"""The pipeline: train -> merge -> convert -> quantize -> smoke -> report, over one run folder.

Each step reads only what earlier steps wrote into runs/<name>/ and records a fingerprint of its
inputs in state.json; a step whose output exists with the same fingerprint is skipped, so a rerun
resumes where the last one stopped (training itself resumes from its last checkpoint).

runs/<name>/
  recipe.yaml  state.json  train_log.jsonl  train.json  adapter/  checkpoints/  merged/
  gguf/<name>-F16.gguf  gguf/<name>-Q4_K_M.gguf ...  gguf/Modelfile  gguf/README.md
  smoke.json  report.md
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

from edgetune import merge as merge_mod
from edgetune import recipe as recipe_mod
from edgetune import report as report_mod
from edgetune import smoke as smoke_mod
from edgetune import sweep as sweep_mod
from edgetune import train as train_mod
from edgetune.base import load_tokenizer
from edgetune.convert import convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Cancelled, CancelToken, Event, ignore
from edgetune.fsutil import is_main_process, write_json, write_text
from edgetune.hub import preflight
from edgetune.recipe import Recipe

STEPS = ("train", "merge", "convert", "quantize", "smoke")


class Run:
    """Paths and per-step state of one run folder."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.dir = recipe_mod.run_dir(recipe)
        self.adapter = self.dir / "adapter"
        self.merged = self.dir / "merged"
        self.gguf_dir = self.dir / "gguf"
        self.state_path = self.dir / "state.json"

    def gguf(self, qtype: str) -> Path:
        return self.gguf_dir / f"{self.recipe.name}-{qtype.upper()}.gguf"

    @property
    def unquantized(self) -> Path:
        return self.gguf(self.recipe.export.outtype)

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def mark(self, step: str, fingerprint: str, seconds: float) -> None:
        if not is_main_process():
            return
        state = self.state()
        state[step] = {"fingerprint": fingerprint, "seconds": round(seconds, 1), "finished": time.time()}
        write_json(self.state_path, state)

    def fingerprint(self, step: str) -> str:
        r = self.recipe
        parts = {"train": (r.base, r.data, r.train), "merge": (), "convert": (r.export.outtype,),
                 "quantize": (r.export, r.smoke), "smoke": (r.smoke, r.export.quants)}
        upstream = STEPS[: STEPS.index(step)]
        text = json.dumps([_plain(parts[s]) for s in upstream + (step,)], default=str, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def up_to_date(self, step: str, outputs: list[Path]) -> bool:
        entry = self.state().get(step)
        return bool(entry) and entry["fingerprint"] == self.fingerprint(step) and all(p.exists() for p in outputs)


def _plain(obj):
    import dataclasses
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    return obj


def run(recipe: Recipe, on_event: Callback = ignore, cancel: CancelToken | None = None,
        until: str = "smoke", force: bool = False) -> dict:
    """Run every step up to `until`; return the smoke summary (or {} when stopping earlier)."""

    if until not in STEPS:
        raise EdgetuneError(f"step {until!r} is not one of {', '.join(STEPS)}")
    preflight(models=[recipe.base], datasets=[recipe.data.path])  # a hub id that cannot be had: before any write
    train_mod.quiet_libraries()
    r = Run(recipe)
    r.dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_text(r.dir / "recipe.yaml", recipe.to_yaml())
    if force:  # redo everything, training included
        r.state_path.unlink(missing_ok=True)

    def step(name: str, outputs: list[Path], fn) -> None:
        if cancel is not None:
            cancel.check()
        if r.up_to_date(name, outputs):
            on_event(Event(name, "step_skip", f"{name}: up to date"))
            return
        t0 = time.time()
        on_event(Event(name, "step_start", name))
        try:
            fn()
        except BaseException as e:
            stopped = isinstance(e, Cancelled)
            on_event(Event(name, "step_fail", f"{name}: {'stopped' if stopped else 'failed'}",
                           data={"cancelled": stopped}))
            raise
        r.mark(name, r.fingerprint(name), time.time() - t0)
        on_event(Event(name, "step_done", f"{name}: {time.time() - t0:.1f}s", data={"seconds": time.time() - t0}))

    drop_stale_checkpoints(r, on_event, force)
    step("train", [r.adapter / "adapter_config.json"],
         lambda: train_mod.train(recipe, r.dir, on_event, cancel))
    if until == "train" or not is_main_process():
        return {}  # under a multi-process launch only rank 0 goes past training
    base_path = _trained_base(r)
    step("merge", [r.merged / "config.json"],
         lambda: merge_mod.merge(base_path, r.adapter, r.merged, on_event))
    if until == "merge":
        return {}
    step("convert", [r.unquantized],
         lambda: convert_hf_to_gguf(r.merged, r.unquantized, recipe.export.outtype, on_event,
                                    metadata={"general.name": recipe.name}))
    if until == "convert":
        return {}
    quant_json = r.dir / "quant.json"
    modelfile = r.gguf_dir / "Modelfile"

    @functools.cache
    def merged_tokenizer():  # once for the sweep, the Modelfile and the smoke test (Gemma's takes seconds)
        return load_tokenizer(str(r.merged))

    def quantize_all() -> None:
        tok = merged_tokenizer()
        summary = sweep_mod.run(recipe, r.merged, r.unquantized, r.gguf, base_path, quant_json, tok, on_event, cancel)
        kept = sweep_mod.kept_labels(summary)  # an auto sweep's recommended file comes first
        target = r.gguf(kept[0] if sweep_mod.is_auto(recipe) else kept[-1]) if kept else r.unquantized
        report_mod.write_model_files(r.gguf_dir, target, r.merged, tok, recipe.name, recipe.base, recipe.data.path,
                                     recipe.train, _train_summary(r).get("template"))
    outputs = [] if sweep_mod.is_auto(recipe) else [r.gguf(q) for q in recipe.export.quants
                                                    if q != recipe.export.outtype.upper()]
    step("quantize", outputs + [quant_json, modelfile], quantize_all)
    quants = sweep_mod.kept_labels(json.loads(quant_json.read_text()))
    if until == "quantize":
        return {}

    def smoke_all() -> None:
        summary = smoke_mod.smoke_run(r.merged, base_path, [r.unquantized] + [r.gguf(q) for q in quants],
                                      recipe, modelfile, on_event, merged_tokenizer())
        summary["task"] = report_mod.task_verdict(summary, _train_summary(r),
                                                  report_mod.train_losses(r.dir / "train_log.jsonl"))
        write_json(r.dir / "smoke.json", summary)
    step("smoke", [r.dir / "smoke.json"], smoke_all)
    summary = json.loads((r.dir / "smoke.json").read_text())
    write_text(r.dir / "report.md", report_mod.report(recipe.name, recipe.base, recipe.data.path,
                                                      _train_summary(r), summary)
               + sweep_mod.report_section(json.loads(quant_json.read_text())))
    for line in report_mod.verdict_lines(summary):
        on_event(Event("smoke", "metric", line))
    smoke_mod.require_pass(summary["files"])
    return summary


def drop_stale_checkpoints(r: Run, on_event: Callback, force: bool = False) -> None:
    """Checkpoints resume only the training they were made by: when the base, data or training
    settings changed (or `force`), start over rather than continue another run's optimizer state."""
    import shutil
    ckpt = r.dir / "checkpoints"
    stamp = ckpt / "edgetune-fingerprint"
    if not is_main_process():
        return
    if ckpt.is_dir() and (force or not stamp.is_file() or stamp.read_text() != r.fingerprint("train")):
        shutil.rmtree(ckpt)
        (r.dir / "train_log.jsonl").unlink(missing_ok=True)
        on_event(Event("train", "log", "settings changed since the last checkpoints: training starts over"))
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(r.fingerprint("train"))


def _train_summary(r: Run) -> dict:
    try:
        return json.loads((r.dir / "train.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise EdgetuneError(f"{r.dir}/train.json: missing; run the train step first") from None


def _trained_base(r: Run) -> str:
    try:
        return _train_summary(r)["base_path"]
    except KeyError:
        raise EdgetuneError(f"{r.dir}/train.json: no base_path; run the train step again") from None
