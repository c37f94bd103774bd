"""Mixed quant types per tensor: each tensor gets the type that buys the most accuracy per byte.

llama.cpp's file types (Q4_K_M, ...) give every tensor of a kind the same type, with a few fixed
upgrades. Here each tensor's cost is measured instead:

1. error_table: the source file is quantized once per type of a ladder (Q2_K ... Q8_0), `pure`
   (every quantizable tensor gets that type) and with the importance matrix; each tensor is read
   back with gguf's reader and dequantized, and its error scored against the source. The quantizer
   falls back where a type does not fit a tensor (a row of 640 is no multiple of K-quants' 256:
   Q4_K -> Q5_0, Q6_K -> Q8_0): the table holds the type it actually wrote, and its bytes.
2. calibrate (optional, needs held-out rows): what a unit of relative error costs in KL divergence,
   measured by llama.cpp per kind of tensor (attn_q, ffn_down, token_embd, ...): each kind alone at
   its smallest type, every other tensor at its largest, against the F16 file. Errors become
   predicted KLD, so a byte goes where the model's output notices it most.
3. choose: the per-tensor types with the least total error within a byte budget.
4. quantize_mix: the plan through the quantizer's per-tensor overrides (tt_overrides), checked
   against the written file's tensor types.

The error of a tensor is relative: how much quantization perturbs its output on the calibration
data, as a share of the output itself,
    sum_j a_j sum_i (w_ij - q_ij)^2  /  sum_j a_j sum_i w_ij^2,
with a_j the importance matrix's mean squared input of column j (E[x_j^2]: for independent inputs
the numerator is E||(W - Q) x||^2, llama.cpp's own quantization objective). Relative, because
tensors feed the network at different scales (Gemma normalizes every block's output again), so
absolute errors of two tensors are not comparable; a relative error of 1% is a 1% perturbation of
that tensor's contribution wherever it sits. The token embedding has no importance matrix: it is
a lookup, so its output is one row per token and its relative error is the rows' squared error over
their squared norm, each token weighted alike (no token frequencies are kept); with tied
embeddings (no output.weight) the same matrix is also the output head, whose relative logit error
is the same figure for isotropic final hidden states, so it counts twice. The total a plan
minimises is the sum of these relative errors over tensors; after calibrate, the sum of
sensitivity(kind) x relative error, a first-order model of the file's mean KLD (KLD and relative
error are both quadratic in the weight error).
"""
from __future__ import annotations

import heapq
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from edgetune.convert.filetypes import FILE_TYPES
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.inputs.gguf_io import check_gguf_file
from edgetune.measure.heldout import Heldout
from edgetune.steps.quantize import imatrix as imatrix_mod
from edgetune.steps.quantize import kld
from edgetune.steps.quantize.quantize import quantize

LADDER = ("Q2_K", "Q3_K", "Q4_0", "Q4_K", "Q5_0", "Q5_K", "Q6_K", "Q8_0")  # ggml tensor types, fewest bits first
# ggml type -> the file type whose `pure` quantize writes it (the registry's pure_type): how a ladder type
# is quantized, and what a mix made mostly of that type is labelled.
FILE_TYPE_OF = {t.pure_type.name: t.name for t in FILE_TYPES.values() if t.pure_type is not None}
EMBEDDING = "token_embd.weight"
ROWS_PER_CHUNK = 8192  # rows dequantized at once (Gemma's embedding is 262,144 rows)


@dataclass(frozen=True)
class Option:
    type: str  # the ggml type the quantizer wrote for this tensor
    bytes: int  # its data, padded to the file's alignment
    error: float  # relative error (module docstring), weighted


@dataclass
class Table:
    """Per quantizable tensor, what each ladder type costs in bytes and error."""

    src: str
    fixed_bytes: int  # header, metadata and the tensors no ladder type changes
    options: dict[str, list[Option]]  # tensor -> one option per distinct written type, fewest bytes first
    fallbacks: dict[str, dict[str, str]] = field(default_factory=dict)  # ladder type -> {tensor: type written}
    sensitivity: dict[str, float] = field(default_factory=dict)  # kind -> KLD per unit relative error (calibrate)

    def smallest(self) -> int:
        return self.fixed_bytes + sum(opts[0].bytes for opts in self.options.values())

    def size(self, types: dict[str, str]) -> int:
        return self.fixed_bytes + sum(self.option(n, t).bytes for n, t in types.items())

    def error(self, types: dict[str, str]) -> float:
        return sum(self.option(n, t).error for n, t in types.items())

    def option(self, name: str, type_name: str) -> Option:
        return next(o for o in self.options[name] if o.type == type_name)


@dataclass
class MixPlan:
    types: dict[str, str]  # tensor -> ggml type
    bytes: int  # the file's size, predicted exactly from the table
    error: float
    held: dict[str, int] = field(default_factory=dict)  # ggml type -> bytes of tensors of that type

    def file_type(self) -> str:
        """The file type the mix is labelled with (general.file_type): that of the type holding most
        of its bytes, among types that are some file type's own."""
        known = [t for t in sorted(self.held, key=lambda t: -self.held[t]) if t in FILE_TYPE_OF]
        return FILE_TYPE_OF[known[0]] if known else "Q8_0"

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.types.values()).items()))


# ---------------------------------------------------------------- 1. the error table

def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _alignment(reader: gguf.GGUFReader) -> int:
    f = reader.fields.get("general.alignment")
    return int(f.contents()) if f is not None else gguf.GGUF_DEFAULT_ALIGNMENT


def _rows(t) -> np.ndarray:
    """A tensor's data as 2-D rows (float rows, or bytes of quantized rows); experts stacked."""
    return t.data.reshape(-1, t.data.shape[-1])


def tensor_error(ref, quant, weights: np.ndarray | None) -> tuple[float, float]:
    """(sum_j a_j sum_i (w - q)^2, sum_j a_j sum_i w^2) of one tensor, streamed ROWS_PER_CHUNK rows
    at a time; `weights` [n_mat, n_cols] (a stacked experts tensor: one row of weights per expert),
    or None for plain squared error."""
    w_rows, q_rows = _rows(ref), _rows(quant)
    n_rows = len(w_rows)
    n_mat = 1 if weights is None else len(weights)
    per_mat = n_rows // n_mat
    err = sig = 0.0
    for m in range(n_mat):
        d2 = s2 = 0.0
        for r0 in range(m * per_mat, (m + 1) * per_mat, ROWS_PER_CHUNK):
            r1 = min(r0 + ROWS_PER_CHUNK, (m + 1) * per_mat)
            w = gguf.quants.dequantize(np.asarray(w_rows[r0:r1]), ref.tensor_type).astype(np.float64)
            q = gguf.quants.dequantize(np.asarray(q_rows[r0:r1]), quant.tensor_type).astype(np.float64)
            d2 = d2 + ((w - q) ** 2).sum(0)
            s2 = s2 + (w * w).sum(0)
        a = 1.0 if weights is None else weights[m]
        err += float(np.dot(d2, a) if weights is not None else np.sum(d2))
        sig += float(np.dot(s2, a) if weights is not None else np.sum(s2))
    return err, sig


def error_table(src: str | Path, imatrix: str | Path | None, ladder=LADDER, threads: int = 0,
                on_event: Callback = ignore, workdir: str | Path | None = None) -> Table:
    """Quantize `src` once per ladder type (temp files, deleted) and score every tensor it changes."""
    src = Path(src)
    check_gguf_file(src)
    unknown = [t for t in ladder if t not in FILE_TYPE_OF]
    if unknown:
        raise EdgetuneError(f"mixed ladder: {', '.join(unknown)} is not one of {', '.join(FILE_TYPE_OF)}")
    weights = {}
    if imatrix is not None:
        im = imatrix_mod.read(imatrix)
        weights = {n: v.reshape(len(im.sums[n]), -1).astype(np.float64) for n, v in im.mean_squares().items()}
    ref = gguf.GGUFReader(str(src), "r")
    ref_tensors = {t.name: t for t in ref.tensors}
    alignment = _alignment(ref)
    tied = "output.weight" not in ref_tensors
    # A tensor a rung leaves in the source type (a row length no block of that type divides) simply
    # has no option of that rung; the bytes of every tensor any rung quantizes are taken out of the
    # lowest rung's file size, the rest (header, norms) is fixed.
    found: dict[str, dict[str, Option]] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    first: dict[str, int] = {}  # the lowest rung's file: tensor -> padded bytes
    first_size = 0
    with tempfile.TemporaryDirectory(dir=workdir or src.parent, prefix=".mixed-") as tmp:
        for step, rung in enumerate(ladder, 1):
            path = Path(tmp) / f"{src.stem}-{rung}.gguf"
            quantize(src, path, FILE_TYPE_OF[rung], threads, imatrix=imatrix, pure=True)
            reader = gguf.GGUFReader(str(path), "r")
            if step == 1:
                first = {t.name: _padded(int(t.n_bytes), alignment) for t in reader.tensors}
                first_size = path.stat().st_size
            n = 0
            for t in reader.tensors:
                written = t.tensor_type.name
                if t.tensor_type == ref_tensors[t.name].tensor_type:
                    continue  # not quantized at this rung
                if written != rung:
                    fallbacks.setdefault(rung, {})[t.name] = written
                if written in found.get(t.name, {}):
                    continue  # the same type as a lower rung's fallback: scored already
                err, sig = tensor_error(ref_tensors[t.name], t, weights.get(t.name))
                scale = 2.0 if t.name == EMBEDDING and tied else 1.0
                found.setdefault(t.name, {})[written] = Option(written, _padded(int(t.n_bytes), alignment),
                                                               scale * err / max(sig, 1e-30))
                n += 1
            del reader
            path.unlink()
            on_event(Event("quantize", "progress", f"mixed: scored {n} tensors at {rung}", step=step,
                           total=len(ladder)))
    if not found:
        raise EdgetuneError(f"{src}: no tensor is quantized by any ladder type")
    fixed = first_size - sum(first[n] for n in found)
    options = {n: sorted(by_type.values(), key=lambda o: (o.bytes, o.error)) for n, by_type in sorted(found.items())}
    return Table(str(src), fixed, options, fallbacks)


# ---------------------------------------------------------------- 2. calibration by KL divergence

def kind(name: str) -> str:
    """A tensor's kind: its name without the block (blk.3.attn_q.weight -> attn_q.weight)."""
    return re.sub(r"^blk\.\d+\.", "", name)


def calibrate(table: Table, src: str | Path, imatrix: str | Path | None, ref: kld.FileReference, rows: Heldout,
              threads: int = 0, on_event: Callback = ignore, workdir: str | Path | None = None) -> Table:
    """The table with each error scaled to predicted KLD: per kind, the mean KLD (against `ref`, the
    F16 file's) of a file with that kind at its smallest type and the rest at its largest, less the
    KLD of the all-largest file, over the kind's summed relative error at the smallest type."""
    src = Path(src)
    largest = {n: opts[-1].type for n, opts in table.options.items()}
    kinds = sorted({kind(n) for n in table.options})
    sensitivity = {}
    with tempfile.TemporaryDirectory(dir=workdir or src.parent, prefix=".mixed-") as tmp:
        def kld_of(types: dict[str, str]) -> float:
            path = Path(tmp) / f"{src.stem}-probe.gguf"
            quantize_mix(src, path, MixPlan(types, table.size(types), table.error(types)), imatrix, threads)
            try:
                return kld.measure(path, ref, rows, max_tokens=1, threads=threads).mean_kld
            finally:
                path.unlink()

        base = kld_of(largest)
        for step, k in enumerate(kinds, 1):
            low = {n: opts[0].type for n, opts in table.options.items() if kind(n) == k}
            probe = kld_of({**largest, **low})
            err = sum(table.option(n, t).error - table.option(n, largest[n]).error for n, t in low.items())
            sensitivity[k] = max(probe - base, 0.0) / max(err, 1e-30)
            on_event(Event("quantize", "progress", f"mixed: {k} at its smallest type: KLD {probe:.4f} "
                           f"(all largest: {base:.4f})", step=step, total=len(kinds)))
    options = {n: [Option(o.type, o.bytes, sensitivity[kind(n)] * o.error) for o in opts]
               for n, opts in table.options.items()}
    return Table(table.src, table.fixed_bytes, options, table.fallbacks, sensitivity)


# ---------------------------------------------------------------- 3. the chooser

def _hull(options: list[Option]) -> list[Option]:
    """The options on the lower convex hull of (bytes, error): each step buys less error per byte
    than the one before it, and none costs more bytes for no less error."""
    kept: list[Option] = []
    for o in options:
        if kept and o.error >= kept[-1].error:
            continue  # more bytes, no less error
        while len(kept) >= 2:
            a, b = kept[-2], kept[-1]
            # b is under the line a -> o only if it buys at least as much per byte as o does from a
            if (a.error - b.error) * (o.bytes - a.bytes) <= (a.error - o.error) * (b.bytes - a.bytes):
                kept.pop()
            else:
                break
        kept.append(o)
    return kept


def choose(table: Table, budget: int) -> MixPlan:
    """Per-tensor types with the least total error whose file fits `budget` bytes: from the smallest
    type everywhere, repeatedly the one upgrade that removes the most error per extra byte and still
    fits (greedy on each tensor's convex hull; ties by tensor name, so the plan is deterministic)."""
    smallest = table.smallest()
    if budget < smallest:
        raise EdgetuneError(f"mixed quantization: a budget of {budget / 2**20:.2f} MiB ({budget:,} bytes) is below "
                            f"the smallest mix, {smallest / 2**20:.2f} MiB ({smallest:,} bytes)")
    hulls = {n: _hull(opts) for n, opts in table.options.items()}
    at = {n: 0 for n in hulls}
    total = smallest

    def push(heap, n):
        h, i = hulls[n], at[n]
        if i + 1 < len(h):
            gain = (h[i].error - h[i + 1].error) / max(h[i + 1].bytes - h[i].bytes, 1)
            heapq.heappush(heap, (-gain, n))

    heap: list = []
    for n in sorted(hulls):
        push(heap, n)
    while heap:
        _, n = heapq.heappop(heap)
        h, i = hulls[n], at[n]
        extra = h[i + 1].bytes - h[i].bytes
        if total + extra > budget:
            continue  # its next step does not fit; later ones cost more still
        at[n] = i + 1
        total += extra
        push(heap, n)
    types = {n: hulls[n][i].type for n, i in at.items()}
    held = Counter()
    for n, t in types.items():
        held[t] += table.option(n, t).bytes
    return MixPlan(types, total, table.error(types), dict(held))


# ---------------------------------------------------------------- 4. the mixed file

def written_types(path: str | Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path), "r").tensors}


def quantize_mix(src: str | Path, dst: str | Path, plan: MixPlan, imatrix: str | Path | None = None,
                 threads: int = 0, on_event: Callback = ignore) -> dict:
    """Write the plan through llama.cpp's per-tensor overrides and check every tensor got its type
    (a mismatch removes the file and says which tensors)."""
    dst = Path(dst)
    info = quantize(src, dst, plan.file_type(), threads, on_event, imatrix=imatrix, tensor_types=plan.types,
                    pure=True)
    got = written_types(dst)
    wrong = [f"{n} {got.get(n)} (planned {t})" for n, t in plan.types.items() if got.get(n) != t]
    if wrong:
        dst.unlink(missing_ok=True)
        raise EdgetuneError(f"{dst}: llama.cpp did not apply the mixed plan to {len(wrong)} tensors: "
                            + "; ".join(wrong[:3]))
    return {**info, "type": "mixed", "file_type": plan.file_type(), "planned_bytes": plan.bytes,
            "types": plan.counts()}
