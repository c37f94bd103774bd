"""Mixed quant types per tensor (edgetune.mixed): the per-tensor error table, the chooser under a byte
budget, and the mix written through llama.cpp's per-tensor overrides."""
import re

import gguf
import numpy as np
import pytest

from edgetune import mixed
from edgetune.convert import convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.runs import RunFolder
from edgetune.steps.quantize.mixed import Option, Table

K_LADDER = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")


@pytest.fixture(scope="module")
def table(llama256, llama256_imatrix):  # noqa: F811
    _model_dir, f16 = llama256
    return mixed.error_table(f16, llama256_imatrix)


def test_error_falls_as_bits_rise_for_every_tensor(table):
    assert "token_embd.weight" in table.options and "output.weight" in table.options
    assert len(table.options) == 2 * 7 + 2 and not table.fallbacks
    for name, opts in table.options.items():
        err = {o.type: o.error for o in opts}
        size = {o.type: o.bytes for o in opts}
        assert set(err) == set(mixed.LADDER), name
        ladder = [err[t] for t in K_LADDER]
        assert all(a > b > 0 for a, b in zip(ladder, ladder[1:])), (name, ladder)
        assert err["Q4_0"] > err["Q5_0"] > err["Q8_0"] and err["Q4_K"] < err["Q4_0"], name  # imatrix-aware K-quant
        assert [size[t] for t in K_LADDER] == sorted(size[t] for t in K_LADDER)
        assert 0.03 < err["Q2_K"] < 0.2 and err["Q8_0"] < 1e-4, name  # a relative error: a share of the output


def test_error_is_weighted_by_the_importance_matrix():
    """A column with twice the mean squared input counts twice; no importance matrix: plain squared error."""
    class T:  # what tensor_error reads of a GGUFReader tensor
        def __init__(self, data, kind):
            self.data, self.tensor_type = data, kind

    w = np.arange(64, dtype=np.float32).reshape(2, 32) / 64
    q = w.copy()
    q[:, 3] += 0.5  # all the error is in column 3
    plain, signal = mixed.tensor_error(T(w, gguf.GGMLQuantizationType.F32), T(q, gguf.GGMLQuantizationType.F32), None)
    assert plain == pytest.approx(2 * 0.25) and signal == pytest.approx(float((w.astype(np.float64) ** 2).sum()))
    weights = np.ones((1, 32))
    weights[0, 3] = 2.0
    weighted, _ = mixed.tensor_error(T(w, gguf.GGMLQuantizationType.F32), T(q, gguf.GGMLQuantizationType.F32), weights)
    assert weighted == pytest.approx(2 * plain)


def test_fallback_types_are_what_the_table_holds(tiny_base, tmp_path):
    """Rows of 64 take no 256-block K-quant: the quantizer writes Q5_0 for Q4_K, and the table says so;
    the tied embedding (also the output head) counts twice."""
    f16 = convert_hf_to_gguf(tiny_base, tmp_path / "m-F16.gguf", "f16")
    t = mixed.error_table(f16, None, ladder=("Q4_K", "Q8_0"))
    assert set(t.fallbacks) == {"Q4_K"} and set(t.fallbacks["Q4_K"]) == set(t.options)
    assert set(t.fallbacks["Q4_K"].values()) == {"Q5_0"}
    assert all([o.type for o in opts] == ["Q5_0", "Q8_0"] for opts in t.options.values())
    assert "output.weight" not in t.options and "token_embd.weight" in t.options
    assert not [p for p in tmp_path.iterdir() if p.name != "m-F16.gguf"]  # the ladder's files are gone


def constructed() -> Table:
    """Two tensors of equal size; b's error matters 100x more. c has a dominated option (more bytes, more error)."""
    return Table("m.gguf", 1000, {
        "a": [Option("Q2_K", 100, 1.0), Option("Q4_K", 200, 0.1), Option("Q8_0", 400, 0.001)],
        "b": [Option("Q2_K", 100, 100.0), Option("Q4_K", 200, 10.0), Option("Q8_0", 400, 0.1)],
        "c": [Option("Q4_0", 50, 0.5), Option("Q4_1", 60, 0.6), Option("Q8_0", 100, 0.01)],
    })


def test_chooser_spends_bytes_where_the_error_matters_most():
    t = constructed()
    assert t.smallest() == 1250
    plan = mixed.choose(t, 1250 + 100)
    assert plan.types == {"a": "Q2_K", "b": "Q4_K", "c": "Q4_0"} and plan.bytes == 1350
    plan = mixed.choose(t, 1250 + 300)
    assert plan.types == {"a": "Q2_K", "b": "Q8_0", "c": "Q4_0"}
    assert mixed.choose(t, 10**9).types == {"a": "Q8_0", "b": "Q8_0", "c": "Q8_0"}
    last = float("inf")
    for budget in range(1250, 2000, 7):
        plan = mixed.choose(t, budget)
        assert plan.bytes == t.size(plan.types) <= budget and plan.types["c"] != "Q4_1"
        assert plan.error <= last
        last = plan.error
    assert mixed.choose(t, 1777) == mixed.choose(t, 1777)


def test_budget_below_the_smallest_mix_is_one_clear_line():
    with pytest.raises(EdgetuneError) as e:
        mixed.choose(constructed(), 1200)
    assert str(e.value) == ("mixed quantization: a budget of 0.00 MiB (1,200 bytes) is below the smallest mix, "
                            "0.00 MiB (1,250 bytes)")


def test_overrides_are_anchored_tensor_names():
    from edgetune.steps.quantize.quantize import _tensor_overrides
    arr = _tensor_overrides({"blk.1.attn_q.weight": "Q6_K", "token_embd.weight": "Q4_0"})
    patterns = {arr[i].pattern.decode(): arr[i].type for i in range(2)}
    assert arr[2].pattern is None
    pattern = next(p for p in patterns if "attn_q" in p)
    assert re.search(pattern, "blk.1.attn_q.weight") and not re.search(pattern, "blk.11.attn_q.weight")
    assert not re.search(pattern, "blk.1xattn_q.weight")
    assert patterns[pattern] == int(gguf.GGMLQuantizationType.Q6_K)


def test_mixed_file_has_the_planned_types_and_runs(table, llama256, llama256_imatrix, tmp_path):  # noqa: F811
    from llama_cpp import Llama
    _model_dir, f16 = llama256
    largest = table.size({n: opts[-1].type for n, opts in table.options.items()})
    budget = (table.smallest() + largest) // 2
    plan = mixed.choose(table, budget)
    assert len(set(plan.types.values())) >= 2 and plan.types["token_embd.weight"] in mixed.LADDER
    out = tmp_path / "m-mixed.gguf"
    info = mixed.quantize_mix(f16, out, plan, llama256_imatrix)
    written = mixed.written_types(out)
    assert {n: written[n] for n in plan.types} == plan.types
    assert info["bytes"] == out.stat().st_size == plan.bytes <= budget
    assert gguf.GGUFReader(str(out)).fields["quantize.imatrix.file"].contents() == llama256_imatrix.name
    llm = Llama(model_path=str(out), n_ctx=64, verbose=False)
    text = llm.create_completion("the last word", max_tokens=4, temperature=0.0)["choices"][0]["text"]
    ids = llm.tokenize(b"the last word", add_bos=True)
    llm.reset()
    llm.eval(ids)
    assert np.isfinite(np.array(llm.scores[len(ids) - 1])).all() and isinstance(text, str)
    llm.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-mixed.gguf"]


def test_calibrate_turns_errors_into_predicted_kld(table, llama256, llama256_imatrix):  # noqa: F811
    from quant_fixtures import token_rows

    from edgetune import kld
    from edgetune.measure.heldout import Heldout
    model_dir, f16 = llama256
    ids = token_rows(model_dir, repeat=1)
    rows = Heldout(ids, [[1] * len(r) for r in ids])
    ref = kld.reference(f16, rows, max_tokens=1)
    before = {p.name for p in f16.parent.iterdir()}
    cal = mixed.calibrate(table, f16, llama256_imatrix, ref, rows)
    assert set(cal.sensitivity) == {"token_embd.weight", "output.weight", "attn_q.weight", "attn_k.weight",
                                    "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
                                    "ffn_down.weight"}
    assert all(v >= 0 for v in cal.sensitivity.values()) and max(cal.sensitivity.values()) > 0
    for name, opts in table.options.items():
        s = cal.sensitivity[mixed.kind(name)]
        assert [o.type for o in cal.options[name]] == [o.type for o in opts]
        assert [o.error for o in cal.options[name]] == pytest.approx([s * o.error for o in opts])
    assert {p.name for p in f16.parent.iterdir()} == before  # the probe files are gone


# ---------------------------------------------------------------- export.quants: auto with auto_mixed

def test_auto_mixed_is_a_recipe_key():
    from edgetune.inputs.recipe import from_dict
    assert from_dict({}).export.auto_mixed is False
    assert from_dict({"export": {"quants": "auto", "auto_mixed": True}}).export.auto_mixed is True
    with pytest.raises(EdgetuneError, match="recipe.export.auto_mixed: expected true or false, got 'yes'"):
        from_dict({"export": {"auto_mixed": "yes"}})


def test_pipeline_auto_mixed_keeps_the_closer_file(tiny_base, demo_jsonl, trained_run, tmp_path):
    """The mix is built at the recommended single file's size, measured the same way, and kept only if its
    KLD is lower; the report says which won and by how much."""
    import shutil

    from edgetune import pipeline
    from edgetune import sweep as sweep_mod

    from conftest import make_recipe
    r0, run_dir = trained_run
    shutil.copytree(run_dir, tmp_path / "runs" / r0.name)
    r = make_recipe(tiny_base, demo_jsonl, tmp_path / "runs", train={"max_steps": 12},
                    export={"quants": "auto", "auto_types": ["Q4_0", "Q8_0"], "auto_embedding_types": ["default"],
                            "auto_min_top1": 0.6, "auto_max_accuracy_drop": 1.0, "auto_mixed": True})
    pipeline.run(r, until="quantize")
    run = RunFolder.of(r)
    q = run.quant_result()
    m = q.sweep.mixed
    mix = next(f for f in q.files if f.label == m.label)
    single = next(f for f in q.files if f.label == m.against)
    assert m.label == f"{single.label}-MIXED" and mix.bytes <= single.bytes
    assert set(m.sensitivity) >= {"token_embd.weight", "attn_q.weight", "ffn_down.weight"}
    assert m.won == (mix.mean_kld < single.mean_kld)  # both within the loose budget
    winner, loser = (mix, single) if m.won else (single, mix)
    assert q.sweep.recommended == winner.label and winner.recommended and not loser.kept
    assert run.gguf(winner.label).is_file() and not run.gguf(loser.label).exists()
    assert f"{mix.mean_kld:.4f} vs {single.mean_kld:.4f}" in q.sweep.why
    assert f"{winner.label} is recommended instead" in q.sweep.why if m.won else \
        f"{single.label} stays recommended" in q.sweep.why
    types = mixed.written_types(run.gguf(mix.label)) if m.won else None
    assert types is None or sum(mix.types.values()) == len([t for t in types.values() if t not in ("F32",)])
    assert q.kept_labels() == [winner.label]
    assert winner.label in sweep_mod.report_section(q)


@pytest.mark.parametrize("mix_kld, mix_top1, won", [(0.05, 0.99, True), (0.2, 0.99, False), (0.05, 0.5, False)])
def test_mixed_candidate_wins_only_when_closer_and_within_budget(monkeypatch, tmp_path, mix_kld, mix_top1, won):
    from edgetune import kld
    from edgetune import sweep as sweep_mod
    from edgetune.inputs.recipe import from_dict
    from edgetune.results import QuantFile

    spec = from_dict({"export": {"quants": "auto", "auto_mixed": True}}).export
    monkeypatch.setattr(sweep_mod.mixed, "error_table", lambda *a, **k: constructed())
    monkeypatch.setattr(sweep_mod.mixed, "calibrate", lambda table, *a: table)

    def fake_mix(src, dst, plan, imatrix, threads, on_event):
        dst.write_bytes(b"x" * plan.bytes)
        return {"path": str(dst), "bytes": plan.bytes, "bits_per_weight": 4.0}

    monkeypatch.setattr(sweep_mod.mixed, "quantize_mix", fake_mix)
    monkeypatch.setattr(sweep_mod.kld, "measure", lambda path, *a: kld.Measure(mix_kld, 1.0, mix_top1, 10, 2.0, 1.0,
                                                                              0.75, []))
    single = QuantFile("Q4_K_M", "Q4_K_M", bytes=1400, mean_kld=0.1, top1=0.99)
    ref = kld.FileReference("f16", [], 1.0, 0.75, [], 0)
    m = sweep_mod.Measuring(tmp_path / "m-F16.gguf", spec, None, ref, None, lambda q: tmp_path / f"m-{q}.gguf", 8, 1)
    row = sweep_mod.mixed_candidate(m, single)
    assert row.won is won and row.bytes <= 1400 and row.label == "Q4_K_M-MIXED"
    assert f"{mix_kld:.4f} vs 0.1000 ({mix_kld / 0.1:.2f}x)" in row.verdict
    assert ("Q4_K_M-MIXED is recommended instead" if won else "Q4_K_M stays recommended") in row.verdict
    single.bytes = 1000  # below the smallest mix (1,250 bytes): no mixed file, said why
    row = sweep_mod.mixed_candidate(m, single)
    assert not row.won and not row.measured and "below the smallest mix" in row.verdict
