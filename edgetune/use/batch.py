"""Batch conversion: every PEFT LoRA adapter under a folder -> GGUF files, one row per adapter.

Two outputs per adapter:
  merged  base + adapter -> one quantized model GGUF per quant type, in a single streaming pass:
          each base tensor is read once from safetensors, the adapter's scaled B @ A is added in
          fp32 where it applies, and the tensor goes straight into the GGUF (no merged copy on
          disk, never the whole model in memory). K-quants then go through llama.cpp.
  lora    a GGUF LoRA adapter (llama.cpp's adapter format) to load beside the base GGUF, which
          is converted once per base.

Adapters are grouped by base; each base is resolved and (for lora mode) converted once. A
manifest in OUT records what is done, so a rerun skips it. One bad adapter fails its own row.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edgetune.convert import convert_hf_to_gguf, convert_lora_to_gguf
from edgetune.convert.filetypes import DIRECT_TYPES, file_type
from edgetune.convert.lora_deltas import LoraDeltas
from edgetune.convert.model_folder import ModelFolder
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Cancelled, CancelToken, Event, ignore
from edgetune.fsutil import write_json, write_text
from edgetune.inputs.base import resolve_base
from edgetune.results import StepRecord
from edgetune.steps.merge import base_folder, tensor_names
from edgetune.steps.quantize.quantize import quantize
from edgetune.steps.smoke import quick_check

MODES = ("merged", "lora", "both")


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def find_adapters(root: str | Path) -> list[Path]:
    """Folders at or under `root` holding adapter-like files (adapter_config.json or adapter weights),
    sorted; a folder with only one of them is listed too, and `adapter_problem` says what it lacks."""
    root = Path(root)
    if not root.exists():
        raise EdgetuneError(f"{root}: no such folder")
    names = (ADAPTER_CONFIG, *ADAPTER_WEIGHTS)
    if any((root / n).is_file() for n in names):
        return [root]
    return sorted({p.parent for n in names for p in root.rglob(n) if p.is_file()})


def adapter_problem(adapter: Path) -> str | None:
    """Why a folder of adapter-like files cannot be converted (one line); None when it can be tried."""
    weights = [n for n in ADAPTER_WEIGHTS if (adapter / n).is_file()]
    if not (adapter / ADAPTER_CONFIG).is_file():
        return (f"{adapter}: {weights[0]} without {ADAPTER_CONFIG} (PEFT's save_pretrained writes both; "
                "the rank, alpha and target modules are in it)")
    if not weights:
        return f"{adapter}: {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS[0]} (nor {ADAPTER_WEIGHTS[1]}): no weights to convert"
    return None


def adapter_base(adapter: Path, base_override: str | None = None) -> str:
    if base_override:
        return base_override
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EdgetuneError(f"{adapter}/adapter_config.json: unreadable ({e})") from None
    base = config.get("base_model_name_or_path")
    if not base:
        raise EdgetuneError(f"{adapter}/adapter_config.json: no base_model_name_or_path (pass --base)")
    return base


def slug(adapter: Path, root: Path) -> str:
    rel = adapter.relative_to(root) if adapter != root else Path(adapter.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(rel)).strip("-") or "adapter"


class Manifest:
    """OUT/manifest.json: per adapter, the StepRecord of its outputs (the pipeline's rule for what is done)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / "manifest.json"
        try:
            entries = json.loads(self.path.read_text())
            self.entries = {k: StepRecord.from_dict(v) for k, v in entries.items()}
        except (FileNotFoundError, json.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError):
            self.entries = {}  # none, or not one this edgetune wrote: everything is redone

    def done(self, key: str, fingerprint: str) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry.done(fingerprint)

    def record(self, key: str, fingerprint: str, files: list[str], seconds: float) -> None:
        self.entries[key] = StepRecord(fingerprint, round(seconds, 1), time.time(), files)
        write_json(self.path, {k: v.to_dict() for k, v in self.entries.items()})


def _fingerprint(adapter: Path, base: str, quants: list[str], mode: str) -> str:
    h = hashlib.sha256(f"{base}|{','.join(quants)}|{mode}".encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        p = adapter / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def convert_merged(base_dir: Path, adapter: Path, out_dir: Path, name: str, quants: list[str],
                   threads: int = 0, on_event: Callback = ignore) -> list[str]:
    """Base + adapter -> GGUF per quant type, in one streaming pass over the base tensors."""
    deltas = LoraDeltas(adapter)
    names = tensor_names(base_dir)
    deltas.check_complete(names)
    folder = ModelFolder(base_dir)
    deltas.check_experts_fit({n: folder.shape(n) for n in folder.names()})
    direct = [q for q in quants if q in DIRECT_TYPES]
    kquants = [q for q in quants if q not in DIRECT_TYPES]
    files = []
    # K-quants need a 16-bit source: F16 if asked for, else a temporary one.
    passes = direct + (["F16"] if kquants and "F16" not in direct else [])
    for q in passes:
        out = out_dir / f"{name}-{q}.gguf"
        convert_hf_to_gguf(base_dir, out, DIRECT_TYPES[q].outtype, on_event, tensor_transform=deltas.apply,
                           metadata={"general.name": name})
        if q in direct:
            files.append(str(out))
    if kquants:
        src = out_dir / f"{name}-F16.gguf"
        for q in kquants:
            files.append(quantize(src, out_dir / f"{name}-{q}.gguf", q, threads, on_event)["path"])
        if "F16" not in direct:
            src.unlink(missing_ok=True)
    return files


@dataclass
class BatchJob:
    """What every adapter of one base shares in a batch run."""

    base_dir: Path
    base_gguf: Path | None  # the base as an F16 GGUF (lora mode), converted once
    out_dir: Path
    quants: list[str]
    mode: str
    threads: int
    smoke: bool
    manifest: Manifest
    on_event: Callback
    cancel: CancelToken | None


def run_batch(adapters: str | Path | list, out_dir: str | Path, quants: list[str], mode: str = "merged",
              on_event: Callback = ignore, cancel: CancelToken | None = None, base: str | None = None,
              jobs: int = 1, threads: int = 0, smoke: bool = True) -> list[dict]:
    """Convert every adapter; return one row per adapter (status ok/skipped/failed, files, error)."""
    if mode not in MODES:
        raise EdgetuneError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    quants = [file_type(q).name for q in quants]
    for q in quants:
        if file_type(q).needs_imatrix:
            raise EdgetuneError(f"quant type {q} needs an importance matrix from the training data, which batch "
                                "conversion does not have; use `edgetune run` (export.quants) for it")
    rows, root = adapter_rows(adapters)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    groups = group_by_base(rows, base)
    on_event(Event("batch", "start", f"{len(rows)} adapters, {len(groups)} bases, mode {mode}, "
                   f"quants {','.join(quants)}", total=len(rows)))
    for base_spec, group in groups.items():
        try:
            base_dir = base_folder(resolve_base(base_spec, on_event))
            base_gguf = base_model_gguf(base_dir, out_dir, on_event) if mode != "merged" else None
        except EdgetuneError as e:
            for row in group:
                row.update(status="failed", error=str(e))
            continue
        job = BatchJob(base_dir, base_gguf, out_dir, quants, mode, threads, smoke, manifest, on_event, cancel)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(lambda row: convert_one(row, job), group))
    write_json(out_dir / "batch.json", rows)
    write_text(out_dir / "batch.md", batch_report(rows))
    on_event(Event("batch", "done", f"{sum(r['status'] in ('ok', 'skipped') for r in rows)}/{len(rows)} adapters "
                   f"converted", data={"rows": rows}))
    return rows


def adapter_rows(adapters: str | Path | list) -> tuple[list[dict], Path | None]:
    """One pending row per adapter (a folder searched for adapters, or a list of them)."""
    if isinstance(adapters, (list, tuple)):
        paths, root = [Path(a) for a in adapters], None
    else:
        root = Path(adapters)
        paths = find_adapters(root)
    if not paths:
        raise EdgetuneError(f"{adapters}: no PEFT adapters found (folders with adapter_config.json and "
                            "adapter_model.safetensors)")
    rows = []
    for p in paths:
        problem = adapter_problem(p)
        rows.append({"adapter": str(p), "name": slug(p, root) if root else p.name,
                     "status": "failed" if problem else "pending", "files": [], "error": problem or "",
                     "seconds": 0.0})
    return rows, root


def group_by_base(rows: list[dict], base: str | None) -> dict[str, list[dict]]:
    """Pending rows by the base they were trained on (so each base is resolved once); unreadable ones fail."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] != "pending":  # a broken adapter folder keeps its own row and reason
            continue
        try:
            row["base"] = adapter_base(Path(row["adapter"]), base)
            groups.setdefault(row["base"], []).append(row)
        except EdgetuneError as e:
            row.update(status="failed", error=str(e))
    return groups


def base_model_gguf(base_dir: Path, out_dir: Path, on_event: Callback) -> Path:
    """The base as an F16 GGUF beside the outputs, for LoRA adapters to load on (kept for reruns)."""
    target = out_dir / f"base-{re.sub(r'[^A-Za-z0-9._-]+', '-', base_dir.name)}-F16.gguf"
    if not target.exists():
        convert_hf_to_gguf(base_dir, target, "f16", on_event)
    return target


def convert_one(row: dict, job: BatchJob) -> None:
    """One adapter's outputs (or its error) into its row; a manifest entry makes a rerun skip it."""
    if job.cancel is not None and job.cancel.cancelled:
        row["status"] = "cancelled"
        return
    adapter, key = Path(row["adapter"]), row["name"]
    fp = _fingerprint(adapter, str(job.base_dir), job.quants, job.mode)
    if job.manifest.done(key, fp):
        row.update(status="skipped", files=job.manifest.entries[key].files)
        job.on_event(Event("batch", "progress", f"{key}: up to date", data=dict(row)))
        return
    t0 = time.time()
    row["status"] = "running"
    job.on_event(Event("batch", "progress", f"{key}: converting", data=dict(row)))
    try:
        files = []
        if job.mode in ("merged", "both"):
            files += convert_merged(job.base_dir, adapter, job.out_dir, key, job.quants, job.threads, job.on_event)
        if job.mode in ("lora", "both"):
            files.append(str(convert_lora_to_gguf(adapter, job.base_dir, job.out_dir / f"{key}-lora-F16.gguf",
                                                  "f16", job.on_event)))
        if job.smoke:
            row["smoke"] = smoke_outputs(files, job.base_gguf, job.threads)
        job.manifest.record(key, fp, files, time.time() - t0)
        row.update(status="ok", files=files)
    except Cancelled:
        row["status"] = "cancelled"
    except EdgetuneError as e:
        row.update(status="failed", error=str(e))
    row["seconds"] = round(time.time() - t0, 1)
    job.on_event(Event("batch", "progress", f"{key}: {row['status']}", data=dict(row)))


def smoke_outputs(files: list[str], base_gguf: Path | None, threads: int = 0) -> list[dict]:
    """Each produced file loads in llama.cpp, answers something and stops; LoRA files load beside the base."""
    results = []
    for f in files:
        if f.endswith("-lora-F16.gguf") or "-lora-" in Path(f).name:
            results.append(quick_check(base_gguf, lora=Path(f), threads=threads))
        else:
            results.append(quick_check(Path(f), threads=threads))
    failed = [r for r in results if not r["passed"]]
    if failed:
        raise EdgetuneError(f"{failed[0]['file']}: smoke test failed ({'; '.join(failed[0]['problems'])})")
    return results


def batch_report(rows: list[dict]) -> str:
    lines = ["| adapter | base | status | files | seconds | error |", "|---|---|---|---|---|---|"]
    for r in rows:
        files = ", ".join(Path(f).name for f in r["files"])
        lines.append(f"| {r['name']} | {r.get('base', '')} | {r['status']} | {files} | {r['seconds']} | "
                     f"{r['error'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"
