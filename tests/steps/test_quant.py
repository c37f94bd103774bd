"""Task-aware quantization: the file-type registry, the importance matrix from training rows (judged
against llama.cpp's own forward pass), quantizing with it (IQ types), and KL divergence."""
import ctypes
import json

import gguf
import numpy as np
import pytest
from llama_imatrix import llama_imatrix
from quant_fixtures import build_llama256, token_rows

from edgetune import heldout, kld, pipeline
from edgetune import imatrix as imatrix_mod
from edgetune.convert import convert_hf_to_gguf
from edgetune.convert.filetypes import DIRECT_TYPES, FILE_TYPES, by_ftype, file_type
from edgetune.errors import EdgetuneError
from edgetune.inputs.gguf_io import summary
from edgetune.runs import RunFolder
from edgetune.steps.quantize.quantize import predicted_size, quantize

from arch_models import build
from conftest import make_recipe

# ---------------------------------------------------------------- registry

def test_registry_is_built_on_gguf_ids():
    assert int(file_type("q4_k_m").ftype) == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert int(file_type("F32").ftype) == int(gguf.LlamaFileType.ALL_F32)
    for name, t in FILE_TYPES.items():
        assert by_ftype(int(t.ftype)) is t and by_ftype(str(int(t.ftype))) is t  # llama.cpp metadata is text
        assert t.needs_imatrix == name.startswith("IQ")
    assert set(DIRECT_TYPES) == {"F32", "F16", "BF16", "Q8_0"}
    assert DIRECT_TYPES["Q8_0"].direct == gguf.GGMLQuantizationType.Q8_0
    with pytest.raises(EdgetuneError, match="'Q9_X' is not one of F32, F16"):
        file_type("Q9_X")


def test_recipe_and_batch_read_the_registry(tmp_path):
    from edgetune.inputs.recipe import from_dict
    from edgetune.use.batch import run_batch
    assert from_dict({"export": {"quants": ["iq4_xs", "q4_0"]}}).export.quants == ["IQ4_XS", "Q4_0"]
    with pytest.raises(EdgetuneError, match="export.outtype 'q4_0' is not one of f32, f16, bf16, q8_0"):
        from_dict({"export": {"outtype": "q4_0"}})
    with pytest.raises(EdgetuneError, match="IQ3_M needs an importance matrix"):
        run_batch(tmp_path, tmp_path / "out", ["IQ3_M"])


# ---------------------------------------------------------------- importance matrix

@pytest.mark.parametrize("arch", ["llama256", "gemma3", "phi3", "qwen35"])
def test_imatrix_matches_llama_cpp_forward_pass(arch, tmp_path):
    """Ours (torch hooks on the HF model) vs llama.cpp's (graph callback on the F16 GGUF): the same
    tensors, the same token counts, per-tensor correlation >= 0.99. Phi-3 has fused qkv and gate_up;
    Qwen3.5's delta-net out_proj has its columns in llama.cpp's value-head order."""
    model_dir = build_llama256(tmp_path) if arch == "llama256" else build(arch, tmp_path)
    f16 = convert_hf_to_gguf(model_dir, tmp_path / "m-F16.gguf", "f16")
    rows = token_rows(model_dir, repeat=1)
    ours = imatrix_mod.compute(model_dir, rows, "t")
    theirs = llama_imatrix(f16, rows)
    assert set(ours.sums) == set(theirs) and len(theirs) >= 4 * 2  # phi3: qkv, o, gate_up, down
    for name, (sums, count) in theirs.items():
        assert ours.counts[name][0] == count == sum(len(r) for r in rows), name
        r = np.corrcoef(ours.sums[name][0], sums)[0, 1]
        assert r >= 0.99, f"{name}: correlation {r:.4f}"
        rel = np.linalg.norm(ours.sums[name][0] - sums) / np.linalg.norm(sums)
        assert rel < 0.05, f"{name}: relative L2 difference {rel:.3f}"  # F16 weights in llama.cpp, fp32 in HF


def test_imatrix_file_round_trips(llama256_imatrix):
    im = imatrix_mod.read(llama256_imatrix)
    reader = gguf.GGUFReader(str(llama256_imatrix))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in reader.fields
    assert im.datasets == ["texts.jsonl"] and im.chunk_size == 512 and im.chunk_count == -(-im.tokens // 512) == 2
    name = "blk.0.attn_q.weight"
    sums = next(t for t in reader.tensors if t.name == f"{name}.in_sum2")
    assert list(sums.shape) == [256, 1]  # ne0 = input columns, ne1 = matrices, as llama-imatrix writes it
    assert im.sums[name].shape == (1, 256) and im.counts[name][0] == im.tokens > 0
    assert (im.mean_squares()[name] > 0).all()


def test_quantize_with_imatrix_records_it_and_iq_types_load(llama256, llama256_imatrix, tmp_path):
    from llama_cpp import Llama
    _model_dir, f16 = llama256
    for q in ("IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_XXS", "IQ2_M", "IQ2_XS"):
        out = tmp_path / f"m-{q}.gguf"
        info = quantize(f16, out, q, imatrix=llama256_imatrix)
        reader = gguf.GGUFReader(str(out))
        fields = {k: f.contents() for k, f in reader.fields.items() if k.startswith("quantize.imatrix")}
        assert fields == {"quantize.imatrix.file": "m.imatrix.gguf", "quantize.imatrix.dataset": "texts.jsonl",
                          "quantize.imatrix.entries_count": 14, "quantize.imatrix.chunks_count": 2}, q
        kinds = {t.tensor_type.name for t in reader.tensors}
        assert any(k.startswith("IQ") for k in kinds), (q, kinds)
        assert info["bits_per_weight"] < 5
        llm = Llama(model_path=str(out), n_ctx=64, verbose=False)
        ids = llm.tokenize(b"the last word", add_bos=True)
        llm.eval(ids)
        assert np.isfinite(np.array(llm.scores[len(ids) - 1])).all()
        llm.close()


def test_iq_type_without_imatrix_is_refused_before_quantizing(llama256, tmp_path):
    _model_dir, f16 = llama256
    with pytest.raises(EdgetuneError, match="IQ2_M needs an importance matrix"):
        quantize(f16, tmp_path / "m-IQ2_M.gguf", "IQ2_M")
    assert list(tmp_path.iterdir()) == []


def test_failed_quantize_leaves_no_file(llama256, llama256_imatrix, tmp_path):
    _model_dir, f16 = llama256
    q8 = quantize(f16, tmp_path / "m-Q8_0.gguf", "Q8_0")["path"]
    with pytest.raises(EdgetuneError, match="could not quantize"):
        quantize(q8, tmp_path / "m-IQ4_NL.gguf", "IQ4_NL", imatrix=llama256_imatrix)  # requantizing is refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-Q8_0.gguf"]


def test_fallback_types_are_one_event_not_a_line_per_tensor(tiny_base, tmp_path, capfd):
    """Rows 64 wide take no K-quant: llama.cpp warns per tensor; the user sees one line."""
    from edgetune.convert import convert_hf_to_gguf
    f16 = convert_hf_to_gguf(tiny_base, tmp_path / "t-F16.gguf", "f16")
    capfd.readouterr()
    events = []
    quantize(f16, tmp_path / "t-Q4_K_M.gguf", "Q4_K_M", on_event=events.append)
    out, err = capfd.readouterr()
    assert "falling back" not in out + err
    lines = [e.message for e in events if "took another type" in e.message]
    assert len(lines) == 1 and lines[0].startswith("Q4_K_M: ") and " to Q5_0" in lines[0], lines
    written = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "t-Q4_K_M.gguf")).tensors}
    n = int(lines[0].split(": ")[1].split()[0])
    assert n == sum(name.startswith("blk.") and t not in ("Q4_K", "Q6_K", "F32") for name, t in written.items())


def test_dry_run_predicts_sizes_and_embedding_type_is_the_lever(llama256, tmp_path):
    _model_dir, f16 = llama256
    for q, emb in (("Q4_K_M", None), ("Q4_K_M", "Q4_0"), ("Q8_0", None)):
        predicted = predicted_size(f16, q, token_embedding_type=emb, output_tensor_type=emb)
        actual = quantize(f16, tmp_path / f"m-{q}-{emb}.gguf", q, token_embedding_type=emb,
                          output_tensor_type=emb)["bytes"]
        assert abs(predicted - actual) < 0.02 * actual + 20_000, (q, emb, predicted, actual)
    assert list(tmp_path.glob("*Q4_K_M-Q4_0*"))[0].stat().st_size < list(tmp_path.glob("*Q4_K_M-None*"))[0].stat().st_size
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m-Q4_K_M-Q4_0.gguf")).tensors}
    assert types["token_embd.weight"] == "Q4_0" and types["output.weight"] == "Q4_0"
    with pytest.raises(EdgetuneError, match="token_embedding_type: 'Q9' is not a ggml tensor type"):
        predicted_size(f16, "Q4_0", token_embedding_type="Q9")


def test_sweep_sizes_every_candidate_reading_the_source_once(llama256, llama256_imatrix, monkeypatch):
    from edgetune import quantize as quantize_mod
    from edgetune import sweep as sweep_mod
    from edgetune.inputs.recipe import from_dict

    _model_dir, f16 = llama256
    spec = from_dict({"export": {"quants": "auto", "auto_types": ["Q4_K_M", "IQ4_XS"],
                                 "auto_embedding_types": ["default", "Q4_0", "Q8_0"]}}).export
    from edgetune import gguf_io

    walks, reads = [], []
    gguf_io._read.clear()
    monkeypatch.setattr(gguf_io, "_walk", lambda buf, size, _w=gguf_io._walk: walks.append(size) or _w(buf, size))
    monkeypatch.setattr(quantize_mod.imatrix_mod, "read", lambda p, _read=imatrix_mod.read: reads.append(p) or _read(p))
    events = []
    found, left_out = sweep_mod.candidates(f16, spec, llama256_imatrix, events.append)
    # the source's header walked once, the importance matrix read once
    assert walks == [f16.stat().st_size] and reads == [llama256_imatrix] and not left_out
    steps = [e.message for e in events if e.kind == "progress"]
    assert steps == [f"sizing {i}/6" for i in range(1, 7)]
    sizes = [c.predicted_bytes for c in found]
    assert sizes == sorted(sizes) and len({c.label for c in found}) == len(found) >= 2
    q = next(c for c in found if c.label == "Q4_K_M-EMB-Q4_0")
    assert q.predicted_bytes == predicted_size(f16, "Q4_K_M", llama256_imatrix, "Q4_0", "Q4_0")


def test_a_gguf_is_parsed_once_until_it_changes(llama256, tmp_path, monkeypatch):
    """The header walk gives gguf.GGUFReader's figures, once per file until the file changes."""
    import shutil

    from edgetune import gguf_io

    _model_dir, f16 = llama256
    copy = tmp_path / "copy-F16.gguf"
    shutil.copy(f16, copy)
    q4 = quantize(copy, tmp_path / "q4.gguf", "Q4_K_M")["path"]
    for path in (copy, q4):
        reader = gguf.GGUFReader(str(path), "r")
        assert gguf_io.summary(path) == gguf_io.GGUFSummary(
            int(reader.data_offset), sum(int(t.n_elements) for t in reader.tensors),
            sum(int(t.n_bytes) for t in reader.tensors), {t.name: int(t.shape[0]) for t in reader.tensors},
            int(reader.fields["general.file_type"].contents()))
    gguf_io._read.clear()
    walks = []
    monkeypatch.setattr(gguf_io, "_walk", lambda buf, size, _w=gguf_io._walk: walks.append(size) or _w(buf, size))
    first = gguf_io.bits_per_weight(copy)
    gguf_io.check_gguf_file(copy)
    assert gguf_io.header_bytes(copy) > 0 and len(walks) == 1
    with open(copy, "r+b") as f:  # truncated: the cached figures must not vouch for it
        f.truncate(copy.stat().st_size // 2)
    with pytest.raises(EdgetuneError, match="copy-F16.gguf: truncated or corrupt GGUF"):
        gguf_io.check_gguf_file(copy)
    assert len(walks) == 2 and first > 0
    with open(copy, "r+b") as f:  # cut inside the metadata
        f.truncate(200)
    with pytest.raises(EdgetuneError, match="copy-F16.gguf: truncated or corrupt GGUF"):
        gguf_io.check_gguf_file(copy)


# ---------------------------------------------------------------- KL divergence

def test_kld_of_a_file_against_itself_is_zero_and_quantized_is_not(llama256, tmp_path):
    from transformers import AutoTokenizer

    from edgetune.inputs.data import Example
    model_dir, f16 = llama256
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    examples = [Example(f"### Instruction:\nsay {w}\n\n### Response:\n", w) for w in ("red fox", "blue cat", "tiger")]
    rows = heldout.rows(examples, tok, 64, n_prompts=2)
    assert len(rows.ids) == 3 and len(rows.prompts) == 2 and rows.expected == ["red fox", "blue cat"]
    ref = kld.reference(f16, rows, max_tokens=4)
    same = kld.measure(f16, ref, rows, max_tokens=4)
    assert same.mean_kld == 0 and same.p99_kld == 0 and same.top1 == 1 and same.delta_ppl == 0
    assert same.answers == ref.answers
    q2 = quantize(f16, tmp_path / "m-Q2_K.gguf", "Q2_K")["path"]
    worse = kld.measure(q2, ref, rows, max_tokens=4)
    assert worse.mean_kld > 1e-4 and worse.p99_kld >= worse.mean_kld and worse.positions == same.positions


def test_gain_kept():
    assert kld.gain_kept(10.0, 2.0, 2.0) == 1.0
    assert kld.gain_kept(10.0, 2.0, 10.0) == 0.0
    assert kld.gave_back(kld.gain_kept(10.0, 2.0, 2.5)) and not kld.gave_back(kld.gain_kept(10.0, 2.0, 2.2))
    # In loss, not perplexity: a file at 74,500 kept little of a fine-tune from 5,000,000 to 2,857.
    assert abs(kld.gain_kept(5_044_103, 2_857, 74_537) - 0.56) < 0.01
    assert kld.gain_kept(2.0, 2.0, 3.0) is None  # nothing gained, nothing to keep


# ---------------------------------------------------------------- the auto sweep

def constructed_sweep(monkeypatch, tmp_path, metrics, cancel_at=None, **budget):
    """sweep() over candidates whose sizes and measures are given: {label: (MiB, top1, accuracy)}."""
    from edgetune import sweep as sweep_mod
    from edgetune.events import CancelToken
    from edgetune.inputs.recipe import from_dict

    spec = from_dict({"export": {"quants": "auto", "auto_types": list(metrics), "auto_embedding_types": ["default"],
                                 **budget}}).export
    cancel = CancelToken()

    class FakeSizer:
        widths: dict = {}

        def __init__(self, src, imatrix):
            pass

        def size(self, q, e, o):
            return int(metrics[q][0] * 2**20)

    monkeypatch.setattr(sweep_mod, "Sizer", FakeSizer)

    def fake_quantize(src, dst, q, threads, on_event, imatrix, token_embedding_type, output_tensor_type):
        if q == cancel_at:
            cancel.cancel()
        dst.write_bytes(b"x" * int(metrics[q][0] * 2**20))
        return {"path": str(dst), "bytes": dst.stat().st_size, "bits_per_weight": 4.0}

    def fake_measure(path, ref, rows, max_tokens, threads, hf_logits=None):
        q = path.rsplit("-", 1)[-1].removesuffix(".gguf")
        cancel.check()
        return kld.Measure(1 - metrics[q][1], 1.0, metrics[q][1], 10, 2.0, 1.0, metrics[q][2], [])

    monkeypatch.setattr(sweep_mod, "quantize", fake_quantize)
    monkeypatch.setattr(sweep_mod.kld, "measure", fake_measure)
    ref = kld.FileReference("f16", [], 1.0, 0.75, [], 0)
    return sweep_mod.sweep(sweep_mod.Measuring(tmp_path / "m-F16.gguf", spec, tmp_path / "im.gguf", ref, None,
                                               lambda q: tmp_path / f"m-{q}.gguf", 8, 1, cancel=cancel))


SWEEP = {"Q8_0": (8.0, 1.0, 0.75), "Q4_K_M": (4.0, 0.99, 0.75), "IQ4_XS": (3.5, 0.985, 0.5),
         "Q2_K": (2.0, 0.90, 0.75)}


def test_auto_picks_the_smallest_file_within_the_budget(monkeypatch, tmp_path):
    files, sweep = constructed_sweep(monkeypatch, tmp_path, SWEEP)
    status = {f.label: f.status for f in files}
    assert sweep.met and sweep.recommended == "Q4_K_M"
    assert "top-1 90.0% < 98%" in status["Q2_K"] and "accuracy 50% < F16's 75% - 1%" in status["IQ4_XS"]
    assert status["Q8_0"] == "not measured: larger than the recommended file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-Q4_K_M.gguf"]  # the others were deleted


def test_auto_budget_keys_change_the_choice(monkeypatch, tmp_path):
    _, sweep = constructed_sweep(monkeypatch, tmp_path, SWEEP, auto_min_top1=0.85, auto_max_accuracy_drop=0.3)
    assert sweep.recommended == "Q2_K"
    _, sweep = constructed_sweep(monkeypatch, tmp_path, SWEEP, auto_max_mib=3.8, auto_keep_all=True)
    assert not sweep.met and sweep.recommended == "IQ4_XS"  # closest under the size limit
    assert "no candidate meets the budget" in sweep.why and "closest: IQ4_XS" in sweep.why
    assert {p.name for p in tmp_path.iterdir()} >= {"m-IQ4_XS.gguf", "m-Q2_K.gguf"}


def test_cancelled_sweep_leaves_no_file(monkeypatch, tmp_path):
    from edgetune.events import Cancelled
    with pytest.raises(Cancelled):
        constructed_sweep(monkeypatch, tmp_path, SWEEP, cancel_at="IQ4_XS")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def trained_copy(trained_run, tmp_path):
    """The session's trained tiny run, copied so this test's later steps stay its own."""
    import shutil
    r, run_dir = trained_run
    shutil.copytree(run_dir, tmp_path / "runs" / r.name)
    return tmp_path / "runs"


def test_pipeline_auto_keeps_the_recommended_file_and_reports_the_sweep(tiny_base, demo_jsonl, trained_copy):

    from edgetune import sweep as sweep_mod

    from conftest import make_recipe
    r = make_recipe(tiny_base, demo_jsonl, trained_copy, train={"max_steps": 12},
                    export={"quants": "auto", "auto_types": ["Q8_0", "Q4_0", "IQ4_NL"],
                            "auto_embedding_types": ["default", "Q4_0"], "auto_min_top1": 0.6,
                            "auto_max_accuracy_drop": 1.0})
    events = []
    pipeline.run(r, events.append, until="quantize")  # the smoke step's own verdicts are tested elsewhere
    run = RunFolder.of(r)
    assert [e.phase for e in events if e.kind == "step_skip"] == ["train"]
    q = run.quant_result()
    assert q.imatrix.tokens >= 1024 and (run.gguf_dir / "t.imatrix.gguf").is_file()
    measured = [f for f in q.files if f.measured]
    best = next(f for f in measured if f.recommended)
    within = [f for f in measured if not f.misses]
    assert q.sweep.met and best.predicted_bytes == min(f.predicted_bytes for f in within)  # smallest
    assert all(f.status.startswith("not measured") for f in q.files if f.predicted_bytes > best.predicted_bytes)
    same_size = [f for f in measured if f.predicted_bytes == best.predicted_bytes]
    assert all(f.misses or f.mean_kld >= best.mean_kld for f in same_size)
    on_disk = sorted(p.name for p in run.gguf_dir.glob("*.gguf"))
    assert on_disk == sorted(["t-F16.gguf", "t.imatrix.gguf", f"t-{best.label}.gguf"])
    assert q.kept_labels() == [best.label]  # what the smoke step tests besides F16
    fields = gguf.GGUFReader(str(run.gguf(best.label))).fields
    assert fields["quantize.imatrix.file"].contents() == "t.imatrix.gguf"
    assert fields["quantize.imatrix.dataset"].contents() == demo_jsonl.name
    report = sweep_mod.report_section(q)
    assert "## Quantization" in report and "★ recommended" in report and "fine-tune kept" in report
    assert f"FROM ./t-{best.label}.gguf" in (run.modelfile).read_text()
    assert 0 <= best.mean_kld and best.top1 >= 0.6 and best.gain_kept is not None
    events = []
    pipeline.run(r, events.append, until="quantize")
    assert [e.phase for e in events if e.kind == "step_skip"] == ["train", "merge", "convert", "quantize"]


def test_too_few_tokens_to_calibrate_falls_back_visibly(tiny_base, demo_jsonl, trained_copy):

    from conftest import make_recipe
    r = make_recipe(tiny_base, demo_jsonl, trained_copy, train={"max_steps": 12},
                    export={"quants": ["IQ4_NL"], "imatrix_tokens": 100})
    events = []
    with pytest.raises(EdgetuneError, match=r"IQ4_NL needs an importance matrix, and there is none \(.*demo.jsonl: "
                                            r"\d+ training tokens are too few to calibrate"):
        pipeline.run(r, events.append, until="quantize")
    assert any("too few to calibrate" in e.message for e in events)
    assert not RunFolder.of(r).gguf("IQ4_NL").exists()


def test_of_two_files_the_same_size_the_closer_is_recommended(monkeypatch, tmp_path):
    _, sweep = constructed_sweep(monkeypatch, tmp_path, {**SWEEP, "IQ4_NL": (4.0, 0.995, 0.75)})
    assert sweep.recommended == "IQ4_NL"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-IQ4_NL.gguf"]


def test_quantizing_keeps_llama_cpp_log_where_it_was_routed(tiny_base, tmp_path):
    """The quantizer reads llama.cpp's log (fallbacks, dry-run sizes); the CLI routes that log to the run's
    edgetune.log. Reading it must not hand llama.cpp back to llama-cpp-python's stderr printer: after a
    quantize, a model load still logs into the file (a sweep's dry runs used to undo the routing, so
    later llama.cpp warnings reached the terminal)."""
    import logging

    import llama_cpp
    import llama_cpp._logger

    from edgetune import logs
    from edgetune.convert import convert_hf_to_gguf
    f16 = convert_hf_to_gguf(tiny_base, tmp_path / "t-F16.gguf", "f16")
    log = tmp_path / "edgetune.log"
    logs.route(log, hf=False, llama=True)
    try:
        out = quantize(f16, tmp_path / "t-Q8_0.gguf", "Q8_0")["path"]
        text = log.read_text()
        assert "llama_model_quantize" in text  # the quantizer's own lines still reach the file
        llm = llama_cpp.Llama(model_path=out, n_ctx=32, verbose=False)
        llm.close()
        assert "llama_cpp: " in log.read_text()[len(text):]  # the load's lines too: the route is back
    finally:
        logs.route(None)
        logging.captureWarnings(False)
        logs._llama["callback"] = None
        llama_cpp.llama_log_set(llama_cpp._logger.llama_log_callback, ctypes.c_void_p(0))


def test_tensor_types_that_cannot_fit_are_refused_or_skipped_never_aborted(tiny_base, tmp_path):
    """Q2_K needs rows that are multiples of 256; the tiny base's are 64 wide (Gemma 3 270M's 640):
    llama.cpp would abort the process (GGML_ASSERT). Refused in one line before training, skipped
    by the sweep with a log line, refused by quantize before llama.cpp is asked."""
    from edgetune import sweep
    from edgetune.convert import convert_hf_to_gguf
    from edgetune.inputs.recipe import ExportSpec
    from edgetune.steps.quantize.quantize import predicted_size, quantize

    recipe = make_recipe(tiny_base, tmp_path / "d.jsonl", tmp_path / "runs",
                         export={"quants": ["auto"], "auto_embedding_types": ["default", "Q2_K"]})
    with pytest.raises(EdgetuneError) as e:
        sweep.check_embedding_types(recipe, 64)
    assert str(e.value).endswith("Q2_K cannot be used with " + str(tiny_base) + ": token_embd.weight has rows of 64 "
                                 "values and Q2_K needs a multiple of 256; types that fit: Q8_0, Q5_1, Q5_0, Q4_1, "
                                 "Q4_0, IQ4_NL")
    sweep.check_embedding_types(recipe, 256)  # fits: no error
    f16 = convert_hf_to_gguf(tiny_base, tmp_path / "t-F16.gguf", "f16")
    with pytest.raises(EdgetuneError, match="token_embd.weight has rows of 64 values and Q2_K needs a multiple of 256"):
        quantize(f16, tmp_path / "t-Q4_K_M.gguf", "Q4_K_M", token_embedding_type="Q2_K")
    with pytest.raises(EdgetuneError, match="rows of 64"):
        predicted_size(f16, "Q4_0", token_embedding_type="Q2_K", output_tensor_type="Q2_K")
    assert not (tmp_path / "t-Q4_K_M.gguf").exists()
    events = []
    cands, _ = sweep.candidates(f16, ExportSpec(auto_types=["Q8_0", "Q4_0"], auto_embedding_types=["default", "Q2_K",
                                                                                                   "Q4_0"]),
                                None, events.append)
    assert {c.embedding for c in cands} <= {"default", "Q4_0"} and cands
    assert any("embedding type Q2_K left out: token_embd.weight has rows of 64" in e.message for e in events)


def test_a_base_imported_from_a_quantized_gguf_warns_about_types_on_its_grid(tmp_path):
    """Gemma 3 270M comes as a Q4_K_M GGUF: its fine-tune quantized back to Q4_K_M kept 56% (loss) of what
    training taught, Q8_0 all of it; the step says why before the smoke test fails the file."""
    from edgetune.inputs.models import SOURCE_FILE, source_type
    from edgetune.steps.quantize.quantize import quantize
    from edgetune.steps.quantize.sweep import grid_notes

    base = tmp_path / "base"
    base.mkdir()
    assert grid_notes(str(base), ["Q4_K_M"]) == []  # a base that was not imported from a GGUF
    f16 = convert_hf_to_gguf(build_llama256(tmp_path / "m"), tmp_path / "m-F16.gguf", "f16")
    q4 = tmp_path / "m-Q4_K_M.gguf"
    quantize(f16, q4, "Q4_K_M")
    (base / SOURCE_FILE).write_text(json.dumps({"gguf": str(q4), "bytes": q4.stat().st_size}))
    assert source_type(base)[1].name == "Q4_K_M"
    notes = grid_notes(str(base), ["Q8_0", "Q4_K_M", "Q3_K_M"])
    assert len(notes) == 1 and "its weights lie on Q4_K_M's grid" in notes[0] and "to Q4_K_M, Q3_K_M can" in notes[0]
    assert grid_notes(str(base), ["Q8_0", "Q6_K"]) == []
    (base / SOURCE_FILE).write_text(json.dumps({"gguf": str(f16), "bytes": f16.stat().st_size}))
    assert grid_notes(str(base), ["Q4_K_M"]) == []  # an F16 source puts the weights on no coarse grid


def test_types_that_do_not_use_an_importance_matrix_are_the_same_without_one(llama256, llama256_imatrix, tmp_path):
    """FILE_TYPES' uses_imatrix=False (the quantize step then computes none): llama.cpp writes the same
    tensors with and without one; a K-quant's differ."""
    _model_dir, f16 = llama256
    for q in [t.name for t in FILE_TYPES.values() if not t.uses_imatrix and not t.unquantized] + ["Q4_K_M"]:
        data = []
        for imatrix in (llama256_imatrix, None):
            out = tmp_path / f"m-{q}-{imatrix is None}.gguf"
            quantize(f16, out, q, imatrix=imatrix)
            data.append(out.read_bytes()[summary(out).data_offset:])
        assert (data[0] == data[1]) == (not FILE_TYPES[q].uses_imatrix), q


def test_a_run_of_q8_0_alone_computes_no_importance_matrix(tiny_base, demo_jsonl, trained_copy):
    """Q8_0 does not read one: the quantize step skips the matrix's pass over the training rows and says why,
    and still measures the file against F16 and the merged model."""
    from conftest import make_recipe
    r = make_recipe(tiny_base, demo_jsonl, trained_copy, export={"quants": ["Q8_0"]})
    events = []
    pipeline.run(r, events.append, until="quantize")
    run = RunFolder.of(r)
    q = run.quant_result()
    assert q.imatrix.path is None and q.imatrix.note == "Q8_0 does not use one, so none was computed"
    assert f"no importance matrix: {q.imatrix.note}" in [e.message for e in events]
    from edgetune.steps.quantize.sweep import report_section
    assert "No importance matrix: Q8_0 does not use one, so none was computed." in report_section(q)
    assert not (run.gguf_dir / "t.imatrix.gguf").exists()
    assert "quantize.imatrix.file" not in gguf.GGUFReader(str(run.gguf("Q8_0"))).fields
    assert q.files[0].mean_kld is not None and q.files[0].logit_check is not None and q.hf is not None
