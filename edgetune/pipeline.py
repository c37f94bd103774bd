"""The pipeline: train -> merge -> convert -> quantize -> smoke, then report.md, over one run folder.

Each step reads only what earlier steps wrote into the RunFolder and records a fingerprint of its
inputs in state.json; a step whose outputs exist with the same fingerprint is skipped, so a rerun
resumes where the last one stopped (training itself resumes from its last checkpoint). state.json
also says how the last attempt ended (done, failed, interrupted), which the runs list shows.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgetune.convert import convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Cancelled, CancelToken, Event, duration, ignore
from edgetune.fsutil import is_main_process, write_text
from edgetune.inputs import data as data_mod
from edgetune.inputs import recipe as recipe_mod
from edgetune.inputs.base import load_tokenizer
from edgetune.inputs.hub import check_ids
from edgetune.inputs.recipe import Recipe
from edgetune.results import QuantResult, SmokeResult, TrainResult
from edgetune.runs import RunFolder
from edgetune.steps import merge as merge_mod
from edgetune.steps import report as report_mod
from edgetune.steps import report_html
from edgetune.steps import smoke as smoke_mod
from edgetune.steps.quantize import sweep as sweep_mod
from edgetune.steps.train import train as train_mod


@dataclass(frozen=True)
class Step:
    name: str
    settings: Callable[[Recipe], tuple]  # what of the recipe the step's output depends on (beside upstream)
    outputs: Callable[[Recipe, RunFolder], list[Path]]  # what must exist for it to count as done


def _quant_outputs(r: Recipe, f: RunFolder) -> list[Path]:
    files = [] if sweep_mod.is_auto(r) else [f.gguf(q) for q in r.export.quants if q != r.export.outtype.upper()]
    return files + [f.quant_json, f.modelfile]


def _train_settings(r: Recipe) -> tuple:
    """What the trained adapter depends on: the experiment tracker is not part of it (switching it on does
    not retrain, and runs made before it existed keep their fingerprints)."""
    train = {k: v for k, v in dataclasses.asdict(r.train).items() if k != "report_to"}
    return (r.base, r.data, train)


# The order of the pipeline, written once: fingerprints, skipping and `until` all read it.
STEP_TABLE = (
    Step("train", _train_settings, lambda r, f: [f.adapter / "adapter_config.json"]),
    Step("merge", lambda r: (), lambda r, f: [f.merged / "config.json"]),
    Step("convert", lambda r: (r.export.outtype,), lambda r, f: [unquantized(r, f)]),
    Step("quantize", lambda r: (r.export, r.smoke), _quant_outputs),
    Step("smoke", lambda r: (r.smoke, r.export.quants), lambda r, f: [f.smoke_json]),
)
STEPS = tuple(s.name for s in STEP_TABLE)


def unquantized(recipe: Recipe, folder: RunFolder) -> Path:
    return folder.gguf(recipe.export.outtype)


def fingerprint(recipe: Recipe, step: str) -> str:
    """A hash of the settings of `step` and of every step before it."""
    upto = STEP_TABLE[: STEPS.index(step) + 1]
    text = json.dumps([_plain(s.settings(recipe)) for s in upto], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def up_to_date(recipe: Recipe, folder: RunFolder, step: str) -> bool:
    record = folder.state().steps.get(step)
    outputs = STEP_TABLE[STEPS.index(step)].outputs(recipe, folder)
    return record is not None and record.done(fingerprint(recipe, step), outputs)


def _plain(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    return obj


def run(recipe: Recipe, on_event: Callback = ignore, cancel: CancelToken | None = None,
        until: str = "smoke", force: bool = False) -> SmokeResult | None:
    """Run every step up to `until`; return the smoke result (None when stopping earlier)."""
    if until not in STEPS:
        raise EdgetuneError(f"step {until!r} is not one of {', '.join(STEPS)}")
    check_ids(models=[recipe.base], datasets=[recipe.data.path])  # a hub id that cannot be had: before any write
    train_mod.quiet_libraries()
    folder = RunFolder.of(recipe)
    if not folder.dir.exists():  # a bad dataset stops here, before there is a folder to leave behind
        check_inputs(recipe, on_event)
    folder.dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_text(folder.recipe_yaml, recipe.to_yaml())
    if force:  # redo everything, training included
        folder.forget_steps()
    folder.mark_outcome("running")
    current = [""]
    try:
        result = _run_steps(recipe, folder, on_event, cancel, until, force, current)
    except Cancelled as e:
        folder.mark_outcome("interrupted", current[0], str(e) or "interrupted")
        raise
    except KeyboardInterrupt as e:  # Ctrl-C: say where it stopped (training says its step)
        message = str(e) or f"interrupted in the {current[0]} step"
        folder.mark_outcome("interrupted", current[0], message)
        raise KeyboardInterrupt(message) from None
    except Exception as e:
        folder.mark_outcome("failed", current[0], str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    folder.mark_outcome("done", until)
    return result


def check_inputs(recipe: Recipe, on_event: Callback = ignore) -> None:
    """What can be checked before a run folder is made: the dataset is read and validated (a missing
    file, a bad CSV, a bad row, a data.columns name the file lacks: one line), and a plan that gives
    too few optimizer steps to learn is warned about, with a batch size or epochs that would do."""
    folder = RunFolder.of(recipe)
    if folder.dir.exists() and up_to_date(recipe, folder, "train"):
        return
    d = recipe.data
    ds = data_mod.load_dataset(data_mod.dataset_source(d.path), d.format, d.on_bad_row, d.columns)
    advice = recipe_mod.steps_advice(recipe.train, recipe_mod.train_rows(len(ds.rows), d.eval_split))
    if advice:
        on_event(Event("train", "log", f"warning: {advice}", data={"too_few_steps": True}))


def _run_steps(recipe: Recipe, folder: RunFolder, on_event: Callback, cancel: CancelToken | None,
               until: str, force: bool, current: list[str]) -> SmokeResult | None:
    @functools.cache
    def merged_tokenizer():  # once for convert, the sweep, the Modelfile and the smoke test (Gemma's takes seconds)
        return load_tokenizer(str(folder.merged))

    def converter_tokenizer():
        """The merged tokenizer for the converter, which writes its pad id: where that is EOS,
        load_tokenizer may have set it, and the converter loads the folder's own."""
        tok = merged_tokenizer()
        return tok if tok.pad_token_id != tok.eos_token_id else None

    def base_path() -> str:
        return _train_result(folder).base_path

    work = {
        "train": lambda: train_mod.train(recipe, folder.dir, on_event, cancel),
        "merge": lambda: merge_mod.merge(base_path(), folder.adapter, folder.merged, on_event),
        "convert": lambda: convert_hf_to_gguf(folder.merged, unquantized(recipe, folder), recipe.export.outtype,
                                              on_event, metadata={"general.name": recipe.name},
                                              tokenizer=converter_tokenizer()),
        "quantize": lambda: _quantize(recipe, folder, base_path(), merged_tokenizer(), on_event, cancel),
        "smoke": lambda: _smoke(recipe, folder, base_path(), merged_tokenizer(), on_event),
    }
    drop_stale_checkpoints(recipe, folder, on_event, force)
    for step in STEP_TABLE:
        current[0] = step.name
        _run_step(recipe, folder, step.name, work[step.name], on_event, cancel)
        if step.name == until or not is_main_process():  # under a multi-process launch only rank 0 goes past training
            return None if step.name != "smoke" else _finish(recipe, folder, on_event)
    return None


def _run_step(recipe: Recipe, folder: RunFolder, name: str, fn, on_event: Callback, cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()
    if up_to_date(recipe, folder, name):
        on_event(Event(name, "step_skip", f"{name}: up to date"))
        return
    t0 = time.time()
    on_event(Event(name, "step_start", name))
    try:
        fn()
    except BaseException as e:
        stopped = isinstance(e, (Cancelled, KeyboardInterrupt))
        on_event(Event(name, "step_fail", f"{name}: {'stopped' if stopped else 'failed'}", data={"cancelled": stopped}))
        raise
    seconds = time.time() - t0
    if is_main_process():
        folder.mark_step(name, fingerprint(recipe, name), seconds)
    on_event(Event(name, "step_done", f"{name}: {duration(seconds)}", data={"seconds": seconds}))


def _quantize(recipe: Recipe, folder: RunFolder, base_path: str, tok, on_event: Callback,
              cancel: CancelToken | None) -> None:
    sweep_mod.quantize_step(recipe, folder, base_path, tok, on_event, cancel)  # writes quant.json
    target = folder.recommended_gguf() or unquantized(recipe, folder)
    report_mod.write_model_files(folder, target, tok, recipe, _train_result(folder).template)


def _smoke(recipe: Recipe, folder: RunFolder, base_path: str, tok, on_event: Callback) -> None:
    quant = QuantResult.read(folder.quant_json)
    files = [unquantized(recipe, folder)] + [folder.gguf(q) for q in quant.kept_labels()]
    result = smoke_mod.smoke_run(folder.merged, base_path, files, recipe, folder.modelfile, on_event, tok, quant)
    train = _train_result(folder)
    result.task = report_mod.task_verdict(result, train, report_mod.train_losses(folder.train_log), recipe)
    result.write(folder.smoke_json)
    offered = folder.recommended_gguf()  # a file that failed here is not offered: the Modelfile follows
    if offered is not None and folder.modelfile.is_file() and \
            f"FROM ./{offered.name}\n" not in folder.modelfile.read_text(encoding="utf-8"):
        report_mod.write_model_files(folder, offered, tok, recipe, train.template)


def _finish(recipe: Recipe, folder: RunFolder, on_event: Callback) -> SmokeResult:
    """report.md and report.html from the records, the two verdicts in the log; a failed file verdict raises."""
    result = folder.smoke_result()
    write_reports(folder, recipe)
    on_event(Event("smoke", "log", f"report: {folder.report_html}"))
    for line in report_mod.verdict_lines(result):
        on_event(Event("smoke", "metric", line))
    smoke_mod.require_pass(result.files, folder.recommended_gguf())
    return result


def write_reports(folder: RunFolder, recipe: Recipe | None = None) -> list[Path]:
    """(Re)write report.md and report.html of a run folder from its records, an old or unfinished run's
    too: what is missing is named in them. `recipe`: the run's own (default: its recipe.yaml).
    An EdgetuneError for a folder that is not a run."""
    if not folder.dir.is_dir():  # a mistyped name: not "not a run folder", which suggests a damaged run
        raise EdgetuneError(f"{folder.dir}: no such folder")
    if not folder.is_run():
        raise EdgetuneError(f"{folder.dir}: not a run folder (no {folder.recipe_yaml.name} or {folder.state_json.name})")
    rec = report_html.records(folder)
    if recipe is not None:
        rec.recipe = recipe
    md = None
    if rec.recipe is not None and rec.train is not None and rec.smoke is not None:
        try:
            md = report_mod.report(rec.recipe, rec.train, rec.smoke, answers_of=rec.offered)
        except (IndexError, KeyError, TypeError, ValueError) as e:  # records of another version
            rec.unreadable.append(f"report.md could not be written from them ({type(e).__name__}: {e})")
    if md is None:
        missing = [p.name for p, r in ((folder.recipe_yaml, rec.recipe), (folder.train_json, rec.train),
                                       (folder.smoke_json, rec.smoke)) if r is None]
        md = f"# edgetune run `{folder.name}`\n\n" + (f"missing: {', '.join(missing)}\n" if missing else "")
        md += "".join(f"\nunreadable: {line}\n" for line in rec.unreadable)
    if rec.quant is not None:
        try:
            md += sweep_mod.report_section(rec.quant)
        except (IndexError, KeyError, TypeError, ValueError) as e:
            md += f"\n## Quantization\n\nquant.json could not be shown ({type(e).__name__}: {e})\n"
    write_text(folder.report_md, md)
    return [folder.report_md, report_html.write(folder, rec)]


def drop_stale_checkpoints(recipe: Recipe, folder: RunFolder, on_event: Callback, force: bool = False) -> None:
    """Checkpoints resume only the training they were made by: when the base, data or training
    settings changed (or `force`), start over rather than continue another run's optimizer state."""
    ckpt = folder.checkpoints
    stamp = ckpt / "edgetune-fingerprint"
    if not is_main_process():
        return
    train_print = fingerprint(recipe, "train")
    if ckpt.is_dir() and (force or not stamp.is_file() or stamp.read_text() != train_print):
        shutil.rmtree(ckpt)
        folder.train_log.unlink(missing_ok=True)
        on_event(Event("train", "log", "settings changed since the last checkpoints: training starts over"))
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(train_print)


def _train_result(folder: RunFolder) -> TrainResult:
    try:
        return folder.train_result()
    except EdgetuneError as e:
        raise EdgetuneError(f"{e}; run the train step first") from None


__all__ = ["STEPS", "STEP_TABLE", "fingerprint", "run", "unquantized", "up_to_date", "write_reports"]
