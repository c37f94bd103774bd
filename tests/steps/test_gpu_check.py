"""scripts/gpu_check.py's QLoRA memory comparison, run on the CPU with the tiny base: the path a GPU day
runs, without its CUDA memory counter (peak RSS stands in), so it cannot break unseen between GPU days."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_memory_comparison_runs_both_recipes_with_qlora(tiny_base, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    rows = dict(gpu_check.memory_comparison(tmp_path, 2, base=tiny_base))
    assert not any("FAILED" in v for v in rows.values()), printed
    assert rows["peak memory ratio ours/seed"].split("x")[0].replace(".", "").isdigit()
    # Both sides trained with QLoRA (NF4 4-bit base) in their own process.
    assert all('"method": "qlora"' in line for line in printed if line.startswith("memory ")), printed
    assert sum(line.startswith("memory ") for line in printed) == 2
