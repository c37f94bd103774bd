"""An importance matrix computed by llama.cpp's own forward pass, as llama-imatrix does it: a graph
evaluation callback (cb_eval in llama_context_params) sees every matrix product and sums the squared
input columns of the blk.* weights. Test-only: it reads ggml_tensor through ctypes (ggml.h layout of
the ggml bundled with llama-cpp-python 0.3.x), to judge edgetune.imatrix against llama.cpp."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_OP_PARAMS, GGML_MAX_NAME = 4, 10, 64, 64
GGML_TYPE_F32 = 0


class GgmlTensor(ctypes.Structure):
    pass


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def _ggml_base():
    import llama_cpp
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    return lib


def _weight_name(raw: bytes) -> str:
    """'CPU#blk.0.attn_q.weight#0' -> 'blk.0.attn_q.weight' (llama-imatrix's filter)."""
    name = raw.decode(errors="replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


def llama_imatrix(gguf_path: str | Path, rows: list[list[int]]) -> dict[str, tuple[np.ndarray, int]]:
    """GGUF tensor name -> (sum of squared inputs per column, tokens), from llama.cpp's forward pass
    over each row alone (every position an output, so the last layer sees every token too). For
    stacked experts (MUL_MAT_ID): ([experts, columns] sums, [experts] tokens routed to each)."""
    import llama_cpp

    ggml = _ggml_base()
    mul_mat = next(i for i in range(200) if ggml.ggml_op_name(i) == b"MUL_MAT")
    mul_mat_id = next(i for i in range(200) if ggml.ggml_op_name(i) == b"MUL_MAT_ID")
    stats: dict[str, list] = {}

    def column(src, i1, i2):
        return np.ctypeslib.as_array(ctypes.cast(src.data + i1 * src.nb[1] + i2 * src.nb[2],
                                                 ctypes.POINTER(ctypes.c_float)), shape=(src.ne[0],)).astype(np.float64)

    @llama_cpp.ggml_backend_sched_eval_callback
    def callback(t_ptr, ask, _user):
        t = ctypes.cast(t_ptr, ctypes.POINTER(GgmlTensor)).contents
        if t.op not in (mul_mat, mul_mat_id):
            return False if ask else True
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = _weight_name(src0.name)
        if not name.startswith("blk.") or src1.type != GGML_TYPE_F32:
            return False if ask else True
        if ask:
            return True
        if t.op == mul_mat_id:  # stacked experts: ids [used, tokens] picks the expert of each input column
            ids = t.src[2].contents
            n_expert = src0.ne[2]
            entry = stats.setdefault(name, [np.zeros((n_expert, src1.ne[0])), np.zeros(n_expert)])
            for token in range(ids.ne[1]):
                for slot in range(ids.ne[0]):
                    e = ctypes.cast(ids.data + slot * ids.nb[0] + token * ids.nb[1], ctypes.POINTER(ctypes.c_int32))[0]
                    x = column(src1, slot % src1.ne[1], token)
                    entry[0][e] += x * x
                    entry[1][e] += 1
            return True
        n_cols = src1.ne[0]
        total = np.zeros(n_cols, dtype=np.float64)
        n = 0
        for i3 in range(src1.ne[3]):
            for i2 in range(src1.ne[2]):
                for row in range(src1.ne[1]):
                    offset = row * src1.nb[1] + i2 * src1.nb[2] + i3 * src1.nb[3]
                    x = np.ctypeslib.as_array(ctypes.cast(src1.data + offset, ctypes.POINTER(ctypes.c_float)),
                                              shape=(n_cols,)).astype(np.float64)
                    total += x * x
                    n += 1
        entry = stats.setdefault(name, [np.zeros(n_cols), 0])
        entry[0] += total
        entry[1] += n
        return True

    model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 512
    params.n_threads = params.n_threads_batch = 1
    params.cb_eval = callback
    ctx = llama_cpp.llama_init_from_model(model, params)
    try:
        for ids in rows:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            batch = llama_cpp.llama_batch_init(len(ids), 0, 1)
            batch.n_tokens = len(ids)
            for i, tok in enumerate(ids):
                batch.token[i] = tok
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            rc = llama_cpp.llama_decode(ctx, batch)
            llama_cpp.llama_batch_free(batch)
            assert rc == 0, f"llama_decode failed ({rc})"
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    return {name: (s, n) for name, (s, n) in stats.items()}
