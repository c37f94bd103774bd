"""The one registry of GGUF file types: every name the recipe, converter, quantizer, smoke test,
batch tool and TUI accept comes from FILE_TYPES.

Ids are not typed again: a type's llama_ftype is gguf.LlamaFileType looked up by its name, and the
types our converter writes itself name their gguf.GGMLQuantizationType. Adding a type is one line.
Nominal bits/weight are llama.cpp's figures for a 7B Llama (mixes keep some tensors wider); the
bits of a real file are measured from it (edgetune.quantize.bits_per_weight).
"""
from __future__ import annotations

from dataclasses import dataclass

import gguf

from edgetune.errors import EdgetuneError

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class FileType:
    name: str  # as llama-quantize spells it
    bits: float  # nominal bits per weight
    about: str  # one line for menus and reports
    needs_imatrix: bool = False  # we refuse to write it without an importance matrix
    uses_imatrix: bool = True  # llama.cpp's quantizer weighs its rounding by one (Q8_0 rounds each block alone)
    direct: Q | None = None  # our converter writes it in one pass (no llama.cpp quantizer)
    offered: bool = False  # in the wizard's and batch screen's short list
    swept: bool = False  # a candidate of export.quants: auto (the recipe's auto_types default)
    # the ggml type a `pure` quantize gives every tensor it can; set on one file type per ggml type,
    # the one that quantizes to it and labels a per-tensor mix (edgetune.mixed) made mostly of it
    pure_type: Q | None = None

    @property
    def ftype(self) -> gguf.LlamaFileType:
        return gguf.LlamaFileType[("ALL_" if self.name == "F32" else "MOSTLY_") + self.name]

    @property
    def unquantized(self) -> bool:
        return self.bits >= 16

    @property
    def outtype(self) -> str:
        """The converter's spelling (export.outtype, --outtype)."""
        return self.name.lower()


FILE_TYPES: dict[str, FileType] = {t.name: t for t in (
    FileType("F32", 32, "full precision", direct=Q.F32, uses_imatrix=False),
    FileType("F16", 16, "half precision, the reference file", direct=Q.F16, offered=True, uses_imatrix=False),
    FileType("BF16", 16, "bfloat16, the training dtype of most bases", direct=Q.BF16, uses_imatrix=False),
    FileType("Q8_0", 8.5, "near lossless", direct=Q.Q8_0, offered=True, swept=True, pure_type=Q.Q8_0,
             uses_imatrix=False),
    FileType("Q6_K", 6.6, "very close to F16", offered=True, swept=True, pure_type=Q.Q6_K),
    FileType("Q5_1", 6.0, "legacy 5-bit with offsets", pure_type=Q.Q5_1),
    FileType("Q5_K_M", 5.7, "close to F16", offered=True, swept=True, pure_type=Q.Q5_K),
    FileType("Q5_K_S", 5.5, "5-bit K-quant, smaller mix"),
    FileType("Q5_0", 5.5, "legacy 5-bit, block 32", pure_type=Q.Q5_0),
    FileType("Q4_1", 5.0, "legacy 4-bit with offsets", pure_type=Q.Q4_1),
    FileType("Q4_K_M", 4.9, "the usual CPU choice", offered=True, swept=True, pure_type=Q.Q4_K),
    FileType("Q4_K_S", 4.6, "4-bit K-quant, smaller mix"),
    FileType("Q4_0", 4.5, "fastest to decode", offered=True, swept=True, pure_type=Q.Q4_0),
    FileType("IQ4_NL", 4.5, "non-linear 4-bit, block 32", needs_imatrix=True, swept=True,
             pure_type=Q.IQ4_NL),
    FileType("IQ4_XS", 4.3, "non-linear 4-bit, block 256", needs_imatrix=True, swept=True,
             pure_type=Q.IQ4_XS),
    FileType("Q3_K_L", 4.3, "3-bit K-quant, large mix"),
    FileType("Q3_K_M", 3.9, "3-bit K-quant", swept=True, pure_type=Q.Q3_K),
    FileType("IQ3_M", 3.7, "3-bit i-quant mix", needs_imatrix=True, swept=True),
    FileType("Q3_K_S", 3.5, "3-bit K-quant, small mix"),
    FileType("IQ3_S", 3.4, "3-bit i-quant", needs_imatrix=True),
    FileType("IQ3_XS", 3.3, "3-bit i-quant, smaller mix", needs_imatrix=True),
    FileType("IQ3_XXS", 3.1, "3-bit i-quant, smallest mix", needs_imatrix=True, swept=True),
    FileType("Q2_K", 3.0, "2-bit K-quant mix", swept=True, pure_type=Q.Q2_K),
    FileType("IQ2_M", 2.7, "2-bit i-quant mix", needs_imatrix=True, swept=True),
    FileType("IQ2_S", 2.5, "2-bit i-quant", needs_imatrix=True),
    FileType("IQ2_XS", 2.3, "2-bit i-quant, smaller", needs_imatrix=True),
    FileType("IQ2_XXS", 2.1, "2-bit i-quant, smallest", needs_imatrix=True),
)}


def file_type(name: str, where: str = "quant type") -> FileType:
    """The registry entry for `name` (any case); a clear error naming the known types otherwise."""
    t = FILE_TYPES.get(str(name).upper())
    if t is None:
        raise EdgetuneError(f"{where} {name!r} is not one of {', '.join(FILE_TYPES)}")
    return t


def by_ftype(ftype) -> FileType | None:
    """The entry for a file's general.file_type, an int or its text as llama.cpp's metadata gives it
    (None for an id we do not list)."""
    try:
        ftype = int(ftype)
    except (TypeError, ValueError):
        return None
    return next((t for t in FILE_TYPES.values() if int(t.ftype) == ftype), None)


DIRECT_TYPES = {name: t for name, t in FILE_TYPES.items() if t.direct is not None}
