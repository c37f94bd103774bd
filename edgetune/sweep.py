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

Writes runs/<name>/quant.json: {imatrix, reference, base, files, sweep}; report_section() renders it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from edgetune import data as data_mod
from edgetune import imatrix as imatrix_mod
from edgetune import kld, mixed
from edgetune.convert.filetypes import FILE_TYPES
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Cancelled, CancelToken, Event, ignore
from edgetune.fsutil import write_json
from edgetune.quantize import predicted_size, quantize
from edgetune.recipe import ExportSpec, Recipe
from edgetune.smoke import generation_stop_ids


def is_auto(recipe: Recipe) -> bool:
    return recipe.export.quants == ["auto"]


def label(qtype: str, embedding: str | None) -> str:
    """What names a sweep file: the type, and the embedding type when it is not llama.cpp's choice."""
    return qtype if embedding is None else f"{qtype}-EMB-{embedding}"


def run(recipe: Recipe, merged: Path, unquantized: Path, gguf_path: Callable[[str], Path], base_path: str,
        out_json: Path, tok, on_event: Callback = ignore, cancel: CancelToken | None = None) -> dict:
    """The whole quantize step; returns (and writes to out_json) its summary. `tok` is the merged
    folder's tokenizer (loaded once by the caller: Gemma's takes seconds)."""
    spec, threads, max_tokens = recipe.export, recipe.smoke.threads, recipe.smoke.max_tokens
    # The merged tokenizer carries the template training used: the same rows, split as in training.
    data_spec = dataclasses.replace(recipe.data, template="model", allow_lost_responses=True)
    prepared = data_mod.prepare(data_spec, tok, recipe.train.seed, str(merged))
    train_ex, eval_ex = prepared.train, prepared.eval
    rows = kld.heldout(eval_ex, tok, recipe.data.max_length, recipe.smoke.prompts)
    auto = is_auto(recipe)
    if auto and not rows.ids:
        raise EdgetuneError(f"{recipe.data.path}: export.quants auto needs held-out rows to measure files on "
                            "(data.eval_split is 0)")
    quants = [] if auto else [q for q in spec.quants if q != spec.outtype.upper()]

    summary: dict = {"imatrix": None, "reference": None, "base": None, "files": [], "sweep": None}
    im_path = None
    if spec.imatrix and (auto or quants):
        im_path, summary["imatrix"] = _imatrix(recipe, merged, train_ex, tok, gguf_path, on_event, cancel)
    if not auto:  # an IQ type without an importance matrix: say so before quantizing anything
        for q in quants:
            if FILE_TYPES[q].needs_imatrix and im_path is None:
                why = summary["imatrix"]["note"] if summary["imatrix"] else "export.imatrix is false"
                raise EdgetuneError(f"export.quants: {q} needs an importance matrix, and there is none ({why})")

    ref = None
    if rows.ids:
        on_event(Event("quantize", "log", f"measuring against {unquantized.name} on {len(rows.ids)} held-out rows"))
        ref = kld.reference(unquantized, rows, max_tokens, threads)
        base_ppl, base_acc = kld.hf_base(base_path, rows, tok, _stop_ids(merged, tok), max_tokens)
        summary["reference"] = {"file": unquantized.name, "perplexity": ref.perplexity, "accuracy": ref.accuracy,
                                "positions": ref.positions, "rows": len(ref.logprobs)}
        summary["base"] = {"perplexity": base_ppl, "accuracy": base_acc}

    if auto:
        summary["files"], summary["sweep"] = sweep(unquantized, spec, im_path, ref, rows, gguf_path, max_tokens,
                                                   threads, on_event, cancel)
    else:
        for q in quants:
            if cancel is not None:
                cancel.check()
            info = quantize(unquantized, gguf_path(q), q, threads, on_event, imatrix=im_path)
            row = _measured(info, ref, rows, max_tokens, threads) if ref else dict(info)
            summary["files"].append({**row, "label": q, "type": q, "kept": True})
    for row in summary["files"]:
        if "perplexity" in row and summary["base"]:
            row["gain_kept"] = kld.gain_kept(summary["base"]["perplexity"], ref.perplexity, row["perplexity"])
            row["gave_back"] = kld.gave_back(row["gain_kept"])
    write_json(out_json, summary)
    return summary


def _stop_ids(merged: Path, tok) -> list[int]:
    """What the fine-tuned model's generation stops on: EOS and the template's turn end."""
    from transformers import GenerationConfig
    has_config = (Path(merged) / "generation_config.json").is_file()
    return generation_stop_ids(GenerationConfig.from_pretrained(str(merged)) if has_config else None, tok)


def _imatrix(recipe, merged, train_ex, tok, gguf_path, on_event, cancel) -> tuple[Path | None, dict]:
    spec = recipe.export
    calib = imatrix_mod.calibration_rows(train_ex, tok, recipe.data.max_length, spec.imatrix_tokens)
    n_tokens = sum(len(r) for r in calib)
    dataset = Path(recipe.data.path).name
    if n_tokens < imatrix_mod.MIN_TOKENS:
        note = (f"{recipe.data.path}: {n_tokens} training tokens are too few to calibrate an importance matrix "
                f"(at least {imatrix_mod.MIN_TOKENS}); quantizing without one")
        on_event(Event("quantize", "log", note))
        return None, {"tokens": n_tokens, "note": note}
    t0 = time.time()
    im = imatrix_mod.compute(merged, calib, dataset, on_event, cancel)
    path = imatrix_mod.write(im, gguf_path("imatrix").with_name(f"{recipe.name}.imatrix.gguf"))
    info = {"path": str(path), "file": path.name, "dataset": dataset, "rows": len(calib), "tokens": n_tokens,
            "chunks": im.chunk_count, "entries": len(im.sums), "seconds": round(time.time() - t0, 1), "note": ""}
    on_event(Event("quantize", "log", f"importance matrix: {n_tokens:,} tokens of {dataset}, {len(im.sums)} "
                   f"matrices, {info['seconds']}s -> {path.name}", data=info))
    return path, info


def _measured(info: dict, ref, rows, max_tokens: int, threads: int) -> dict:
    m = kld.measure(info["path"], ref, rows, max_tokens, threads)
    return {**info, **m}


def meets(row: dict, ref_accuracy: float | None, spec: ExportSpec) -> list[str]:
    """What keeps a measured file outside the budget (empty: it is within)."""
    misses = []
    if row["top1"] < spec.auto_min_top1:
        misses.append(f"top-1 {row['top1']:.1%} < {spec.auto_min_top1:.0%}")
    if ref_accuracy is not None and row["accuracy"] is not None and \
            row["accuracy"] < ref_accuracy - spec.auto_max_accuracy_drop - 1e-9:
        misses.append(f"accuracy {row['accuracy']:.0%} < F16's {ref_accuracy:.0%} - {spec.auto_max_accuracy_drop:.0%}")
    if spec.auto_max_mib and row["bytes"] > spec.auto_max_mib * 2**20:
        misses.append(f"{row['bytes'] / 2**20:.1f} MiB > {spec.auto_max_mib:g} MiB")
    return misses


def candidates(src: Path, spec: ExportSpec, imatrix: Path | None) -> tuple[list[dict], list[str]]:
    """Every (type, embedding type) pair with its dry-run size, smallest first; an override that
    changes nothing (same size as llama.cpp's own choice) is dropped. Also the types left out."""
    left_out, found = [], []
    for q in spec.auto_types:
        if FILE_TYPES[q].needs_imatrix and imatrix is None:
            left_out.append(q)
            continue
        sizes = {}
        for emb in spec.auto_embedding_types:
            e = None if emb.lower() == "default" else emb.upper()
            size = predicted_size(src, q, imatrix, e, e)
            if size in sizes.values():
                continue
            sizes[e] = size
            found.append({"label": label(q, e), "type": q, "embedding": e or "default", "predicted_bytes": size})
    return sorted(found, key=lambda c: c["predicted_bytes"]), left_out


def sweep(src: Path, spec: ExportSpec, imatrix: Path | None, ref, rows, gguf_path: Callable[[str], Path],
          max_tokens: int, threads: int, on_event: Callback = ignore,
          cancel: CancelToken | None = None) -> tuple[list[dict], dict]:
    """Quantize and measure candidates, smallest first, until one is within the budget."""
    cands, left_out = candidates(src, spec, imatrix)
    if left_out:
        on_event(Event("quantize", "log", f"sweep: without an importance matrix {', '.join(left_out)} are left out"))
    on_event(Event("quantize", "log", f"sweep: {len(cands)} candidates from "
                   f"{cands[0]['predicted_bytes'] / 2**20:.1f} to {cands[-1]['predicted_bytes'] / 2**20:.1f} MiB"))
    written: list[Path] = []
    chosen = None
    try:
        for i, c in enumerate(cands, 1):
            if chosen is not None and c["predicted_bytes"] > chosen["predicted_bytes"]:
                c["status"] = "not measured: larger than the recommended file"
                continue
            if spec.auto_max_mib and c["predicted_bytes"] > spec.auto_max_mib * 2**20:
                c["status"] = f"not measured: predicted over {spec.auto_max_mib:g} MiB"
                continue
            if cancel is not None:
                cancel.check()
            emb = None if c["embedding"] == "default" else c["embedding"]
            path = gguf_path(c["label"])
            info = quantize(src, path, c["type"], threads, on_event, imatrix=imatrix,
                            token_embedding_type=emb, output_tensor_type=emb)
            written.append(path)
            c.update(_measured(info, ref, rows, max_tokens, threads))
            c["misses"] = meets(c, ref.accuracy, spec)
            c["status"] = "within budget" if not c["misses"] else "; ".join(c["misses"])
            on_event(Event("quantize", "progress", f"sweep {c['label']}: {c['bytes'] / 2**20:.1f} MiB, "
                           f"KLD {c['mean_kld']:.4f}, top-1 {c['top1']:.1%}", step=i, total=len(cands)))
            if not c["misses"] and (chosen is None or c["mean_kld"] < chosen["mean_kld"]):
                chosen = c  # of files the same size within the budget, the closest to F16
    except (Cancelled, KeyboardInterrupt):
        for p in written:  # a cancelled sweep chose nothing: leave no file of it
            p.unlink(missing_ok=True)
        raise
    measured = [c for c in cands if "mean_kld" in c]
    met = chosen is not None
    if not measured:
        raise EdgetuneError(f"export.auto_max_mib {spec.auto_max_mib:g}: every candidate is predicted larger "
                            f"(smallest: {cands[0]['label']}, {cands[0]['predicted_bytes'] / 2**20:.1f} MiB)")
    if not met:  # keep the closest, and say so
        chosen = max(measured, key=lambda c: (c["top1"], -c["mean_kld"]))
    mix = None
    if spec.auto_mixed:
        try:
            mix = mixed_candidate(src, chosen, spec, imatrix, ref, rows, gguf_path, max_tokens, threads, on_event)
        except (Cancelled, KeyboardInterrupt):
            for p in written:
                p.unlink(missing_ok=True)
            raise
        if mix is not None and "mean_kld" in mix:
            cands.append(mix)
            measured.append(mix)
            if mix["won"]:
                chosen, met = mix, met or not mix["misses"]
    budget = budget_text(spec)
    if met:
        why = (f"{chosen['label']} is the smallest file within the budget ({budget}): {chosen['bytes'] / 2**20:.1f} MiB, "
               f"top-1 {chosen['top1']:.1%}, mean KLD {chosen['mean_kld']:.4f}")
    else:
        why = (f"no candidate meets the budget ({budget}); closest: {chosen['label']} "
               f"({'; '.join(chosen['misses'])}), kept")
    on_event(Event("quantize", "log", f"sweep: {why}"))
    if mix is not None:
        why += f"; {mix['verdict']}"
        on_event(Event("quantize", "log", f"sweep: {mix['verdict']}"))
    for c in measured:
        c["kept"] = c is chosen or spec.auto_keep_all
        c["recommended"] = c is chosen
        if not c["kept"]:
            Path(c["path"]).unlink(missing_ok=True)
    result = {"budget": budget, "met": met, "recommended": chosen["label"], "why": why, "left_out": left_out}
    if mix is not None:
        result["mixed"] = {k: mix.get(k) for k in ("label", "against", "won", "verdict", "types", "sensitivity",
                                                    "mean_kld", "against_kld")}
    return cands, result


def budget_text(spec: ExportSpec) -> str:
    """The auto sweep's budget in words, for the log, the report and the wizard."""
    return (f"top-1 >= {spec.auto_min_top1:.0%}, accuracy >= F16's - {spec.auto_max_accuracy_drop:.0%}"
            + (f", <= {spec.auto_max_mib:g} MiB" if spec.auto_max_mib else ""))


def mixed_candidate(src: Path, single: dict, spec: ExportSpec, imatrix: Path | None, ref, rows,
                    gguf_path: Callable[[str], Path], max_tokens: int, threads: int,
                    on_event: Callback = ignore) -> dict:
    """Per-tensor mixed types with `single`'s file size as the budget, measured as the sweep's files
    are; `won` says whether it is closer to F16 than `single` (and within the budget if `single` is)."""
    label = f"{single['label']}-MIXED"
    on_event(Event("quantize", "log", f"sweep: per-tensor mixed types within {single['label']}'s "
                   f"{single['bytes'] / 2**20:.1f} MiB"))
    table = mixed.error_table(src, imatrix, threads=threads, on_event=on_event)
    table = mixed.calibrate(table, src, imatrix, ref, rows, threads, on_event)
    row = {"label": label, "type": "mixed", "against": single["label"], "against_kld": single["mean_kld"],
           "sensitivity": table.sensitivity, "won": False}
    try:
        plan = mixed.choose(table, single["bytes"])
    except EdgetuneError as e:  # the smallest mix is larger than the single file: nothing to compare
        return {**row, "verdict": f"no mixed file: {e}"}
    path = gguf_path(label)
    info = mixed.quantize_mix(src, path, plan, imatrix, threads, on_event)
    try:
        row.update(_measured(info, ref, rows, max_tokens, threads))
    except BaseException:  # cancelled or failed: no file of it is left
        path.unlink(missing_ok=True)
        raise
    row.update({"label": label, "type": "mixed", "embedding": plan.types.get(mixed.EMBEDDING, "default"),
                "predicted_bytes": plan.bytes, "types": plan.counts()})
    row["misses"] = meets(row, ref.accuracy, spec)
    row["status"] = "within budget" if not row["misses"] else "; ".join(row["misses"])
    ratio = row["mean_kld"] / single["mean_kld"] if single["mean_kld"] > 0 else float("inf")
    row["won"] = row["mean_kld"] < single["mean_kld"] and (not row["misses"] or bool(single["misses"]))
    row["verdict"] = (f"mixed per-tensor types at {single['label']}'s size: {row['bytes'] / 2**20:.1f} MiB, mean KLD "
                      f"{row['mean_kld']:.4f} vs {single['mean_kld']:.4f} ({ratio:.2f}x), top-1 {row['top1']:.1%} vs "
                      f"{single['top1']:.1%}: " + (f"{label} is recommended instead" if row["won"] else
                                                    f"{single['label']} stays recommended"))
    return row


def kept_labels(summary: dict) -> list[str]:
    """The quant labels the smoke step tests: the recommended file first, as the pipeline names them."""
    files = [f for f in summary.get("files", []) if f.get("kept")]
    return [f["label"] for f in sorted(files, key=lambda f: not f.get("recommended"))]


# ---------------------------------------------------------------- report

def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def report_section(summary: dict) -> str:
    """The quantization table of report.md: every file (every sweep candidate) against F16."""
    lines = ["", "## Quantization", ""]
    im = summary.get("imatrix")
    if im and im.get("path"):
        lines.append(f"Importance matrix from {im['tokens']:,} training tokens of `{im['dataset']}` ({im['rows']} rows, "
                     f"{im['seconds']}s): `{im['file']}`.")
    elif im:
        lines.append(f"No importance matrix: {im['note']}.")
    ref, base = summary.get("reference"), summary.get("base")
    if not ref:
        return "\n".join(lines + ["No held-out rows: files were not measured."]) + "\n"
    lines += [f"Measured against `{ref['file']}` on {ref['rows']} held-out rows ({ref['positions']} next-token "
              f"positions): perplexity {ref['perplexity']:.3f}, accuracy {_pct(ref['accuracy'])}; base model before "
              f"fine-tuning: perplexity {base['perplexity']:.3f}, accuracy {_pct(base['accuracy'])}.", ""]
    sweep = summary.get("sweep")
    if sweep:
        lines += [f"**Recommended:** {sweep['why']}.", ""]
    lines += ["| file | MiB | bits/w | mean KLD | p99 KLD | top-1 | Δppl | accuracy | fine-tune kept | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for f in summary["files"]:
        mib = f.get("bytes", f.get("predicted_bytes", 0)) / 2**20
        if "mean_kld" not in f:
            lines.append(f"| {f['label']} | ~{mib:.2f} | | | | | | | | {f.get('status', '')} |")
            continue
        kept = "—" if f.get("gain_kept") is None else f"{f['gain_kept']:.0%}" + (" ⚠ gave back >10%" if f["gave_back"] else "")
        status = ("★ recommended" if f.get("recommended") else f.get("status", "")) + ("" if f.get("kept") else " (deleted)")
        lines.append(f"| {f['label']} | {mib:.2f} | {f['bits_per_weight']:.2f} | {f['mean_kld']:.4f} | {f['p99_kld']:.4f} | "
                     f"{f['top1']:.1%} | {f['delta_ppl']:+.3f} | {_pct(base['accuracy'])} → {_pct(ref['accuracy'])} → "
                     f"{_pct(f['accuracy'])} | {kept} | {status} |")
    lines += ["", "KLD: KL(F16 ‖ file) of next-token distributions; top-1: same most likely token as F16; "
              "fine-tune kept: (ppl_base − ppl_file) / (ppl_base − ppl_F16); accuracy: base → F16 → file."]
    return "\n".join(lines) + "\n"
