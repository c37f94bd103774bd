"""The quantize step: an importance matrix from the training rows, the quantized files (the recipe's
list, or `export.quants: auto`), and what each file cost on the held-out rows.

auto: every candidate type of export.auto_types, each with the token-embedding/output tensor types
of export.auto_embedding_types, is sized first by llama.cpp's dry run; then, smallest first, each is
quantized with the importance matrix and measured (edgetune.kld) until one meets the budget (top-1
agreement with F16, accuracy drop, size). That one is the smallest file within the budget (of
candidates of the same size, the lowest KLD); larger candidates are not measured, the others are
deleted unless export.auto_keep_all. With export.auto_mixed, per-tensor mixed types (edgetune.mixed,
errors calibrated to KLD on the same held-out rows) are then built with the recommended file's size as
the budget and measured the same way; the mix replaces it only if its mean KLD is lower (and it is
within the budget whenever that file is).

Writes the run's quant.json (edgetune.results.QuantResult); report_section() renders it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import edgetune.threads as threads_mod
from edgetune.convert.filetypes import FILE_TYPES
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Cancelled, CancelToken, Event, ignore
from edgetune.inputs.models import source_type
from edgetune.inputs.recipe import ExportSpec, Recipe
from edgetune.measure import heldout, hf_eval, metrics
from edgetune.measure.heldout import Heldout
from edgetune.results import (
    ImatrixInfo,
    MixedInfo,
    ModelAnswers,
    QuantFile,
    QuantReference,
    QuantResult,
    SweepResult,
)
from edgetune.runs import RunFolder
from edgetune.steps.quantize import imatrix as imatrix_mod
from edgetune.steps.quantize import kld, mixed
from edgetune.steps.quantize.quantize import OVERRIDDEN, Sizer, misfit, quantize


def is_auto(recipe: Recipe) -> bool:
    return recipe.export.quants == ["auto"]


def label(qtype: str, embedding: str | None) -> str:
    """What names a sweep file: the type, and the embedding type when it is not llama.cpp's choice."""
    return qtype if embedding is None else f"{qtype}-EMB-{embedding}"


@dataclass
class Measuring:
    """What every file of the quantize step is made from and measured against."""

    src: Path  # the unquantized GGUF
    spec: ExportSpec
    imatrix: Path | None
    ref: kld.FileReference
    rows: Heldout
    gguf_path: Callable[[str], Path]  # label -> where its file goes
    max_tokens: int
    threads: int
    on_event: Callback = ignore
    cancel: CancelToken | None = None
    hf_logits: list | None = None  # the merged model's logits of the smoke test's rows: each file's LogitCheck

    def measured(self, f: QuantFile) -> QuantFile:
        """`f` with its KLD, top-1, perplexity and answers against the reference (and its LogitCheck)."""
        return dataclasses.replace(f, **vars(kld.measure(f.path, self.ref, self.rows, self.max_tokens, self.threads,
                                                         self.hf_logits)))


def quantize_step(recipe: Recipe, folder: RunFolder, base_path: str, tok, on_event: Callback = ignore,
                  cancel: CancelToken | None = None) -> QuantResult:
    """The whole quantize step; returns (and writes to the folder's quant.json) its result. `tok` is
    the merged folder's tokenizer (loaded once by the caller: Gemma's takes seconds).

    The merged model is loaded once, for the importance matrix and for its own answers and logits on
    the smoke test's rows: each file's logits are compared with those here, where every file is
    evaluated on those rows anyway, and the smoke step reads the figures back (QuantResult.hf,
    logit_check)."""
    spec, max_tokens = recipe.export, recipe.smoke.max_tokens
    threads = threads_mod.log_choice("quantize", threads_mod.for_recipe(recipe, measurements=True), on_event, "threads")
    threads_mod.set_torch_threads(threads)  # the importance matrix and the base's figures run in torch
    merged, unquantized = folder.merged, folder.gguf(spec.outtype)
    prepared = heldout.split(recipe, merged, tok)
    rows = heldout.rows(prepared.eval, tok, recipe.data.max_length, recipe.smoke.prompts)
    auto = is_auto(recipe)
    if auto and not rows.ids:
        raise EdgetuneError(f"{recipe.data.path}: export.quants auto needs held-out rows to measure files on "
                            "(data.eval_split is 0)")
    quants = [] if auto else [q for q in spec.quants if q != spec.outtype.upper()]

    result = QuantResult(notes=grid_notes(base_path, quants or list(spec.auto_types)))
    for note in result.notes:
        on_event(Event("quantize", "log", f"warning: {note}"))
    clock = _Clock(result.seconds)
    stops = hf_eval.folder_stop_ids(merged, tok, unquantized) if rows.ids else []
    step = _Step(recipe, folder, tok, clock, on_event, cancel)
    hf_logits, im_path = _from_merged_model(step, prepared.train, rows, quants, stops, result)
    if not auto:  # an IQ type without an importance matrix: say so before quantizing anything
        for q in quants:
            if FILE_TYPES[q].needs_imatrix and im_path is None:
                why = result.imatrix.note if result.imatrix else "export.imatrix is false"
                raise EdgetuneError(f"export.quants: {q} needs an importance matrix, and there is none ({why})")

    ref = None
    if rows.ids:
        with clock("base"):  # the base before fine-tuning, once per run (the smoke step reads it back); before
            # the reference's log-probabilities are held: both at once were the step's peak memory
            result.base = hf_eval.base_figures(base_path, rows, tok, stops, max_tokens)
        on_event(Event("quantize", "log", f"measuring against {unquantized.name} on {len(rows.ids)} held-out rows"))
        with clock("reference"):
            ref = kld.reference(unquantized, rows, max_tokens, threads, hf_logits)
        result.reference = QuantReference(unquantized.name, ref.perplexity, ref.accuracy, ref.positions,
                                          len(ref.logprobs), ref.answers, ref.stopped_at_eos, ref.logit_check)

    m = Measuring(unquantized, spec, im_path, ref, rows, folder.gguf, max_tokens, threads, on_event, cancel, hf_logits)
    if auto:
        with clock("sweep"):
            result.files, result.sweep = sweep(m)
    else:
        for q in quants:
            if cancel is not None:
                cancel.check()
            with clock("quantize"):
                f = _quantized(QuantFile(q, q, kept=True),
                               quantize(unquantized, folder.gguf(q), q, threads, on_event, imatrix=im_path))
            with clock("measure"):
                result.files.append(m.measured(f) if ref else f)
    for f in result.files:
        if f.perplexity is not None and result.base:
            f.gain_kept = kld.gain_kept(result.base.perplexity, ref.perplexity, f.perplexity)
            f.gave_back = kld.gave_back(f.gain_kept)
    result.write(folder.quant_json)
    return result


@dataclass
class _Step:
    """What the parts of one quantize step share."""

    recipe: Recipe
    folder: RunFolder
    tok: object  # the merged folder's tokenizer
    clock: _Clock
    on_event: Callback = ignore
    cancel: CancelToken | None = None


def _from_merged_model(step: _Step, train_ex, rows: Heldout, quants: list[str], stops: list[int],
                       result: QuantResult) -> tuple[list | None, Path | None]:
    """The merged model, loaded once, for its answers and logits on the smoke test's rows (result.hf; the
    logits are returned: every file is compared with them) and for the importance matrix (result.imatrix;
    its path is returned) where the files' types use one. Returns (logits or None, imatrix path or None)."""
    recipe, folder, tok, clock, on_event = step.recipe, step.folder, step.tok, step.clock, step.on_event
    spec = recipe.export
    wants_imatrix = spec.imatrix and bool(is_auto(recipe) or quants)
    if wants_imatrix and quants and not any(FILE_TYPES[q].uses_imatrix for q in quants):
        wants_imatrix = False  # its fp32 pass over the training rows would change no byte of these files
        note = f"{', '.join(quants)} {'does' if len(quants) == 1 else 'do'} not use one, so none was computed"
        result.imatrix = ImatrixInfo(tokens=0, note=note)
        on_event(Event("quantize", "log", f"no importance matrix: {note}"))
    hf_logits = im_path = None
    if not (rows.ids or wants_imatrix):
        return hf_logits, im_path
    with clock("load"):
        model = hf_eval.load(folder.merged)
    try:
        if wants_imatrix:
            with clock("imatrix"):
                im_path, result.imatrix = _imatrix(step, model, train_ex)
        if rows.ids:
            smoke_rows = rows.first(recipe.smoke.prompts)
            on_event(Event("quantize", "log", f"{folder.merged.name} model: answers to {len(smoke_rows.prompts)} "
                           f"held-out prompts and logits of {len(smoke_rows.ids)} rows (what every file is compared with)"))
            with clock("hf"):
                hf = hf_eval.outputs(model, tok, smoke_rows, recipe.smoke.max_tokens, stops)
            result.hf = ModelAnswers(hf.answers, metrics.accuracy(hf.answers, smoke_rows.expected) or 0.0,
                                     hf.perplexity, hf.stopped)
            hf_logits = hf.logits
    finally:
        del model
        gc.collect()  # an HF model holds reference cycles: its fp32 weights (1 GB on Gemma 3 270M) stayed
        # in memory through the measurements until a collection came (peak RSS 3.8 -> 3.4 GB)
    return hf_logits, im_path


class _Clock:
    """`with clock("part"):` adds the block's seconds to seconds["part"]."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = round(self.seconds.get(part, 0.0) + time.perf_counter() - t0, 2)


def grid_notes(base_path: str, types: list[str]) -> list[str]:
    """Why a small type may lose the fine-tune: a base imported from a quantized GGUF has its weights on
    that type's grid, and quantizing to it again snaps most of LoRA's small updates back onto the base's
    values (Gemma 3 270M from its Q4_K_M package, re-quantized to Q4_K_M: 56% and 81% of the fine-tune
    kept in two runs, Q8_0 100%)."""
    found = source_type(base_path)
    if found is None or found[1].unquantized:
        return []
    source, grid = found
    at_or_below = [q for q in types if q in FILE_TYPES and not FILE_TYPES[q].unquantized
                   and FILE_TYPES[q].bits <= grid.bits]
    if not at_or_below:
        return []
    return [f"the base was imported from {source.name}: its weights lie on {grid.name}'s grid, and quantizing the "
            f"fine-tune to {', '.join(at_or_below)} can snap LoRA's small updates back onto the base's values "
            "('fine-tune kept' and the smoke test say how much stayed); wider types (Q6_K, Q8_0) keep them"]


def _imatrix(step: _Step, model, train_ex) -> tuple[Path | None, ImatrixInfo]:
    recipe, folder, tok, on_event = step.recipe, step.folder, step.tok, step.on_event
    spec = recipe.export
    calib = imatrix_mod.calibration_rows(train_ex, tok, recipe.data.max_length, spec.imatrix_tokens)
    n_tokens = sum(len(r) for r in calib)
    dataset = Path(recipe.data.path).name
    if n_tokens < imatrix_mod.MIN_TOKENS:
        note = (f"{recipe.data.path}: {n_tokens} training tokens are too few to calibrate an importance matrix "
                f"(at least {imatrix_mod.MIN_TOKENS}); quantizing without one")
        on_event(Event("quantize", "log", note))
        return None, ImatrixInfo(tokens=n_tokens, note=note)
    t0 = time.time()
    im = imatrix_mod.collect(model, folder.merged, calib, dataset, on_event, step.cancel)
    path = imatrix_mod.write(im, folder.imatrix)
    info = ImatrixInfo(tokens=n_tokens, path=str(path), file=path.name, dataset=dataset, rows=len(calib),
                       chunks=im.chunk_count, entries=len(im.sums), seconds=round(time.time() - t0, 1))
    on_event(Event("quantize", "log", f"importance matrix: {n_tokens:,} tokens of {dataset}, {len(im.sums)} "
                   f"matrices, {info.seconds} s -> {path.name}", data=info.to_dict()))
    return path, info


def _quantized(f: QuantFile, info: dict) -> QuantFile:
    """`f` with what llama.cpp's quantizer wrote (edgetune.quantize's info)."""
    f.path, f.file, f.bytes = info["path"], Path(info["path"]).name, info["bytes"]
    f.bits_per_weight, f.seconds = info["bits_per_weight"], info.get("seconds")
    return f


def meets(f: QuantFile, ref_accuracy: float | None, spec: ExportSpec) -> list[str]:
    """What keeps a measured file outside the budget (empty: it is within)."""
    misses = []
    if f.top1 < spec.auto_min_top1:
        misses.append(f"top-1 {f.top1:.1%} < {spec.auto_min_top1:.0%}")
    if ref_accuracy is not None and f.accuracy is not None and \
            f.accuracy < ref_accuracy - spec.auto_max_accuracy_drop - 1e-9:
        misses.append(f"accuracy {f.accuracy:.0%} < F16's {ref_accuracy:.0%} - {spec.auto_max_accuracy_drop:.0%}")
    if spec.auto_max_mib and f.size > spec.auto_max_mib * 2**20:
        misses.append(f"{f.size / 2**20:.1f} MiB > {spec.auto_max_mib:g} MiB")
    return misses


def candidates(src: Path, spec: ExportSpec, imatrix: Path | None,
               on_event: Callback = ignore) -> tuple[list[QuantFile], list[str]]:
    """Every (type, embedding type) pair with its dry-run size, smallest first; an override that
    changes nothing (same size as llama.cpp's own choice) is dropped, and so is an embedding type
    the model's embedding rows cannot take (with a line in the log). Also the types left out."""
    sizer = Sizer(src, imatrix)
    embeddings = []
    for emb in spec.auto_embedding_types:
        why = embedding_misfit(emb, sizer.widths)
        if why:
            on_event(Event("quantize", "log", f"sweep: embedding type {emb.upper()} left out: {why}"))
        else:
            embeddings.append(None if emb.lower() == "default" else emb.upper())
    left_out = [q for q in spec.auto_types if FILE_TYPES[q].needs_imatrix and imatrix is None]
    pairs = [(q, e) for q in spec.auto_types if q not in left_out for e in embeddings]
    found, sizes = [], {}
    on_event(Event("quantize", "start", f"sizing {len(pairs)} candidates (llama.cpp dry runs)", total=len(pairs)))
    for i, (q, e) in enumerate(pairs, 1):
        size = sizer.size(q, e, e)
        on_event(Event("quantize", "progress", f"sizing {i}/{len(pairs)}", step=i, total=len(pairs)))
        if size in sizes.setdefault(q, {}).values():
            continue
        sizes[q][e] = size
        found.append(QuantFile(label(q, e), q, embedding=e or "default", predicted_bytes=size))
    return sorted(found, key=lambda c: c.predicted_bytes), left_out


def embedding_misfit(emb: str, widths: dict[str, int]) -> str | None:
    """Why an export.auto_embedding_types entry cannot apply to a model whose tensors have these row
    widths ({name: width}: a GGUF's, or the base config's hidden size for both); None when it can."""
    if emb.lower() == "default":
        return None
    for tensor in OVERRIDDEN:
        if tensor in widths and (why := misfit(tensor, widths[tensor], emb)):
            return why
    return None


def check_embedding_types(recipe: Recipe, hidden_size: int) -> None:
    """Before training: every export.auto_embedding_types entry must fit the base's embedding rows
    (hidden_size wide), or the sweep would size and try a file llama.cpp cannot write."""
    if not is_auto(recipe):
        return
    for emb in recipe.export.auto_embedding_types:
        why = embedding_misfit(emb, {OVERRIDDEN[0]: hidden_size})
        if why:
            raise EdgetuneError(f"export.auto_embedding_types: {emb.upper()} cannot be used with {recipe.base}: {why}")


def sweep(m: Measuring) -> tuple[list[QuantFile], SweepResult]:
    """Quantize and measure candidates, smallest first, until one is within the budget."""
    src, spec, imatrix, ref, on_event, cancel = m.src, m.spec, m.imatrix, m.ref, m.on_event, m.cancel
    cands, left_out = candidates(src, spec, imatrix, on_event)
    if left_out:
        on_event(Event("quantize", "log", f"sweep: without an importance matrix {', '.join(left_out)} are left out"))
    on_event(Event("quantize", "log", f"sweep: {len(cands)} candidates from "
                   f"{cands[0].predicted_bytes / 2**20:.1f} to {cands[-1].predicted_bytes / 2**20:.1f} MiB"))
    written: list[Path] = []
    chosen: QuantFile | None = None
    try:
        for i, c in enumerate(cands):
            if chosen is not None and c.predicted_bytes > chosen.predicted_bytes:
                c.status = "not measured: larger than the recommended file"
                continue
            if spec.auto_max_mib and c.predicted_bytes > spec.auto_max_mib * 2**20:
                c.status = f"not measured: predicted over {spec.auto_max_mib:g} MiB"
                continue
            if cancel is not None:
                cancel.check()
            emb = None if c.embedding == "default" else c.embedding
            path = m.gguf_path(c.label)
            info = quantize(src, path, c.type, m.threads, on_event, imatrix=imatrix,
                            token_embedding_type=emb, output_tensor_type=emb)
            written.append(path)
            c = cands[i] = m.measured(_quantized(c, info))
            c.misses = meets(c, ref.accuracy, spec)
            c.status = "within budget" if not c.misses else "; ".join(c.misses)
            on_event(Event("quantize", "progress", f"sweep {c.label}: {c.size / 2**20:.1f} MiB, "
                           f"KLD {c.mean_kld:.4f}, top-1 {c.top1:.1%}", step=i + 1, total=len(cands)))
            if not c.misses and (chosen is None or c.mean_kld < chosen.mean_kld):
                chosen = c  # of files the same size within the budget, the closest to F16
    except (Cancelled, KeyboardInterrupt):
        for p in written:  # a cancelled sweep chose nothing: leave no file of it
            p.unlink(missing_ok=True)
        raise
    measured = [c for c in cands if c.measured]
    met = chosen is not None
    if not measured:
        raise EdgetuneError(f"export.auto_max_mib {spec.auto_max_mib:g}: every candidate is predicted larger "
                            f"(smallest: {cands[0].label}, {cands[0].predicted_bytes / 2**20:.1f} MiB)")
    if not met:  # keep the closest, and say so
        chosen = max(measured, key=lambda c: (c.top1, -c.mean_kld))
    mix = None
    if spec.auto_mixed:
        try:
            mix = mixed_candidate(m, chosen)
        except (Cancelled, KeyboardInterrupt):
            for p in written:
                p.unlink(missing_ok=True)
            raise
        if mix.measured:
            cands.append(mix)
            measured.append(mix)
            if mix.won:
                chosen, met = mix, met or not mix.misses
    budget = budget_text(spec)
    if met:
        why = (f"{chosen.label} is the smallest file within the budget ({budget}): {chosen.size / 2**20:.1f} MiB, "
               f"top-1 {chosen.top1:.1%}, mean KLD {chosen.mean_kld:.4f}")
    else:
        why = f"no candidate meets the budget ({budget}); closest: {chosen.label} ({'; '.join(chosen.misses)}), kept"
    on_event(Event("quantize", "log", f"sweep: {why}"))
    if mix is not None:
        why += f"; {mix.verdict}"
        on_event(Event("quantize", "log", f"sweep: {mix.verdict}"))
    for c in measured:
        c.kept = c is chosen or spec.auto_keep_all
        c.recommended = c is chosen
        if not c.kept:
            Path(c.path).unlink(missing_ok=True)
    result = SweepResult(budget=budget, met=met, recommended=chosen.label, why=why, left_out=left_out)
    if mix is not None:
        result.mixed = MixedInfo(mix.label, mix.against, mix.won, mix.verdict, mix.types, mix.sensitivity,
                                 mix.mean_kld, mix.against_kld)
    return cands, result


def budget_text(spec: ExportSpec) -> str:
    """The auto sweep's budget in words, for the log, the report and the wizard."""
    return (f"top-1 >= {spec.auto_min_top1:.0%}, accuracy >= F16's - {spec.auto_max_accuracy_drop:.0%}"
            + (f", <= {spec.auto_max_mib:g} MiB" if spec.auto_max_mib else ""))


def mixed_candidate(m: Measuring, single: QuantFile) -> QuantFile:
    """Per-tensor mixed types with `single`'s file size as the budget, measured as the sweep's files
    are; `won` says whether it is closer to F16 than `single` (and within the budget if `single` is)."""
    src, imatrix, threads, on_event = m.src, m.imatrix, m.threads, m.on_event
    name = f"{single.label}-MIXED"
    on_event(Event("quantize", "log", f"sweep: per-tensor mixed types within {single.label}'s "
                   f"{single.size / 2**20:.1f} MiB"))
    table = mixed.error_table(src, imatrix, threads=threads, on_event=on_event)
    table = mixed.calibrate(table, src, imatrix, m.ref, m.rows, threads, on_event)
    row = QuantFile(name, "mixed", against=single.label, against_kld=single.mean_kld, sensitivity=table.sensitivity)
    try:
        plan = mixed.choose(table, single.size)
    except EdgetuneError as e:  # the smallest mix is larger than the single file: nothing to compare
        row.verdict = f"no mixed file: {e}"
        return row
    path = m.gguf_path(name)
    info = mixed.quantize_mix(src, path, plan, imatrix, threads, on_event)
    row = _quantized(row, info)
    row.embedding = plan.types.get(mixed.EMBEDDING, "default")
    row.predicted_bytes, row.types = plan.bytes, plan.counts()
    try:
        row = m.measured(row)
    except BaseException:  # cancelled or failed: no file of it is left
        path.unlink(missing_ok=True)
        raise
    row.misses = meets(row, m.ref.accuracy, m.spec)
    row.status = "within budget" if not row.misses else "; ".join(row.misses)
    ratio = row.mean_kld / single.mean_kld if single.mean_kld > 0 else float("inf")
    row.won = row.mean_kld < single.mean_kld and (not row.misses or bool(single.misses))
    row.verdict = (f"mixed per-tensor types at {single.label}'s size: {row.size / 2**20:.1f} MiB, mean KLD "
                   f"{row.mean_kld:.4f} vs {single.mean_kld:.4f} ({ratio:.2f}x), top-1 {row.top1:.1%} vs "
                   f"{single.top1:.1%}: " + (f"{name} is recommended instead" if row.won else
                                              f"{single.label} stays recommended"))
    return row


# ---------------------------------------------------------------- report

def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def report_section(result: QuantResult) -> str:
    """The quantization table of report.md: every file (every sweep candidate) against F16."""
    lines = ["", "## Quantization", ""]
    im = result.imatrix
    if im and im.path:
        lines.append(f"Importance matrix from {im.tokens:,} training tokens of `{im.dataset}` ({im.rows} rows, "
                     f"{im.seconds} s): `{im.file}`.")
    elif im:
        lines.append(f"No importance matrix: {im.note}.")
    lines += [f"Warning: {note}." for note in result.notes]
    ref, base = result.reference, result.base
    if not ref:
        return "\n".join(lines + ["No held-out rows: files were not measured."]) + "\n"
    lines += [f"Measured against `{ref.file}` on {ref.rows} held-out rows ({ref.positions} next-token "
              f"positions): perplexity {ref.perplexity:.3f}, accuracy {_pct(ref.accuracy)}; base model before "
              f"fine-tuning: perplexity {base.perplexity:.3f}, accuracy {_pct(base.accuracy)}.", ""]
    if result.sweep:
        lines += [f"**Recommended:** {result.sweep.why}.", ""]
    lines += ["| file | MiB | bits/w | mean KLD | p99 KLD | top-1 | Δppl | accuracy | fine-tune kept | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for f in result.files:
        mib = f.size / 2**20
        if not f.measured:
            lines.append(f"| {f.label} | ~{mib:.2f} | | | | | | | | {f.status} |")
            continue
        kept = "—" if f.gain_kept is None else f"{f.gain_kept:.0%}" + (" ⚠ gave back >10%" if f.gave_back else "")
        status = ("★ recommended" if f.recommended else f.status) + ("" if f.kept else " (deleted)")
        lines.append(f"| {f.label} | {mib:.2f} | {f.bits_per_weight:.2f} | {f.mean_kld:.4f} | {f.p99_kld:.4f} | "
                     f"{f.top1:.1%} | {f.delta_ppl:+.3f} | {_pct(base.accuracy)} → {_pct(ref.accuracy)} → "
                     f"{_pct(f.accuracy)} | {kept} | {status} |")
    lines += ["", "KLD: KL(F16 ‖ file) of next-token distributions; top-1: same most likely token as F16; "
              "fine-tune kept: (ln ppl_base − ln ppl_file) / (ln ppl_base − ln ppl_F16); accuracy: base → F16 → file."]
    return "\n".join(lines) + "\n"
