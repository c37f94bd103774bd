"""report.html (charts drawn by matplotlib, checked in headless Chromium), `edgetune report`, the Results
screen's Open report, and train.report_to (tensorboard event files read back with tensorboard's reader)."""
import asyncio
import html
import json
import re

import pytest
from typer.testing import CliRunner

from edgetune import pipeline, report_html
from edgetune import recipe as recipe_mod
from edgetune import train as train_mod
from edgetune.cli import app as cli_app
from edgetune.errors import EdgetuneError
from edgetune.results import QuantResult, SmokeResult, TrainResult
from edgetune.runs import RunFolder
from edgetune.tui.app import EdgetuneApp

from browser import render
from conftest import make_recipe
from tui_fixtures import FAKE_SUMMARY, FakeRunner


def _file(label, mib, kld, top1, acc, **extra):
    return {"label": label, "type": label, "bytes": int(mib * 2**20), "bits_per_weight": 8 * mib / 2, "mean_kld": kld,
            "p99_kld": 10 * kld, "top1": top1, "delta_ppl": kld, "accuracy": acc, "gain_kept": 0.95,
            "kept": bool(extra.get("recommended")), "status": "within the budget", **extra}


def write_finished_run(runs_dir, name="fake", quants="auto"):
    """A finished run's folder as the steps leave it (an auto sweep with a size budget), without training."""
    folder = RunFolder(runs_dir / name)
    folder.dir.mkdir(parents=True)
    recipe = recipe_mod.from_dict({"name": name, "runs_dir": str(runs_dir), "data": {"path": "demo"},
                                   "export": {"quants": quants, "auto_min_top1": 0.9, "auto_max_accuracy_drop": 0.25,
                                              "auto_max_mib": 1.1}})
    (folder.recipe_yaml).write_text(recipe.to_yaml())
    TrainResult(method="lora", device="cpu", dtype="fp32", base="demo", base_path="/base", trainable_params=1000,
                total_params=100000, steps=30, seconds=12.5, train_loss=1.2, template="alpaca", train_rows=144,
                eval_rows=16, eval_loss=0.6, eval_perplexity=1.8).write(folder.train_json)
    lines = [json.dumps({"step": s, "epoch": s / 30, "loss": 3 / (1 + s / 4), "learning_rate": 2e-4 * (1 - s / 31),
                         "grad_norm": 1.0, "tokens_per_s": 1000 + 10 * s}) for s in range(2, 32, 2)]
    lines += [json.dumps({"step": s, "eval_loss": 2.5 / (1 + s / 6), "tokens_per_s": 900.0}) for s in (10, 20, 30)]
    lines.insert(5, json.dumps({"step": 8, "loss": 1.25, "learning_rate": 1.5e-4}))  # a resumed run logs step 8 again:
    lines.insert(6, "not json")  # ...the later entry counts; a broken line is left out
    folder.train_log.write_text("\n".join(lines) + "\n")
    sweep = {"budget": "top-1 >= 90%, accuracy >= F16's - 25%, <= 1.1 MiB", "met": True, "recommended": "Q4_K_M",
             "why": "Q4_K_M is the smallest file within the budget"}
    QuantResult.from_dict({
        "imatrix": {"tokens": 4096, "path": "x", "file": f"{name}.imatrix.gguf", "dataset": "demo.jsonl"},
        "reference": {"file": f"{name}-F16.gguf", "perplexity": 1.5, "accuracy": 1.0, "positions": 400, "rows": 16},
        "base": {"perplexity": 9.3, "accuracy": 0.0},
        "sweep": sweep if quants == "auto" else None,
        "files": [_file("Q2_K", 0.5, 0.4, 0.7, 0.25, misses=["top-1 70.0% < 90%"]),
                  _file("Q4_K_M", 0.8, 0.02, 0.95, 1.0, recommended=quants == "auto"),
                  _file("Q5_K_M", 1.0, 0.01, 0.97, 1.0),
                  {"label": "Q8_0", "type": "Q8_0", "predicted_bytes": int(1.2 * 2**20),
                   "status": "not measured: larger than the recommended file"}]}).write(folder.quant_json)
    smoke = SmokeResult.from_dict(json.loads(json.dumps(FAKE_SUMMARY.to_dict()).replace("my-run", name)))
    q8, q4 = smoke.files[1], smoke.files[2]  # the failed file is one the run does not offer
    q8.passed, q8.problems, q4.passed, q4.problems = False, q4.problems, True, []
    folder.gguf_dir.mkdir()
    for label, size in (("F16", 3000), ("Q5_K_M", 1000), ("Q4_K_M", 800), ("Q2_K", 500)):
        folder.gguf(label).write_bytes(b"\0" * size)
    smoke.prompts = ["the last word of red fox", "the word cat said twice", "first word of a b", "x <script>"]
    smoke.expected = ["fox", "cat cat", "a", "y"]
    smoke.write(folder.smoke_json)
    folder.mark_step("smoke", "f", 1.0)
    folder.mark_outcome("done", "smoke")
    return folder


def test_report_html_is_drawn_in_chromium(tmp_path):
    folder = write_finished_run(tmp_path / "runs")
    md, page = pipeline.write_reports(folder)
    assert page == folder.report_html and md == folder.report_md
    drawn = render(page, tmp_path)
    assert len(drawn["svgs"]) == 2 and all(s["width"] > 300 and s["height"] > 100 for s in drawn["svgs"])
    groups = drawn["groups"]
    for gid in ("train-loss", "eval-loss", "learning-rate", "tokens-per-s", "files-kld", "files-top1", "files-accuracy",
                "files-out-kld", "recommended-kld", "recommended-top1", "recommended-accuracy",
                "budget-mib-kld", "budget-mib-top1", "budget-mib-accuracy", "budget-top1", "budget-accuracy",
                "files-unmeasured-kld", "files-unmeasured-accuracy"):
        assert gid in groups, (gid, sorted(groups))
        assert groups[gid]["drawn"] > 0 and groups[gid]["width"] + groups[gid]["height"] > 0, (gid, groups[gid])
    for gid in ("train-loss", "eval-loss", "learning-rate", "tokens-per-s", "recommended-kld"):
        assert groups[gid]["path_chars"] > 20, (gid, groups[gid])  # a real path, not an empty one
    assert drawn["requests"] == 0  # nothing fetched: the file is whole
    for key in ("kld", "top1", "accuracy"):  # the star is drawn whole, at the panel's edge too
        assert groups[f"recommended-{key}"]["clipped"] == 0, groups[f"recommended-{key}"]


def test_file_names_on_the_same_spot_are_one_label(tmp_path):
    """A small model's types often fall back to the same file: their names are stacked in one label, and
    no two labels of a panel overlap, in the browser."""
    folder = write_finished_run(tmp_path / "runs")
    quant = json.loads(folder.quant_json.read_text())
    quant["files"].insert(3, {**quant["files"][2], "label": "Q5_K_S", "type": "Q5_K_S"})  # Q5_K_M's twin
    folder.quant_json.write_text(json.dumps(quant))
    _, page = pipeline.write_reports(folder)
    groups = render(page, tmp_path)["groups"]
    for key in ("kld", "top1", "accuracy"):
        labels = [g for gid, g in groups.items() if gid.startswith(f"label-{key}-")]
        assert len(labels) == 3, sorted(groups)  # Q2_K, Q4_K_M, and Q5_K_M with Q5_K_S
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                apart = (a["left"] + a["width"] <= b["left"] or b["left"] + b["width"] <= a["left"]
                         or a["top"] + a["height"] <= b["top"] or b["top"] + b["height"] <= a["top"])
                assert apart, (key, a, b)
    svg = page.read_text()
    for key in ("kld", "top1", "accuracy"):  # the twins' names stacked in one label
        assert re.search(rf'<g id="label-{key}-\d+">\s*<text[^>]*>Q5_K_M</text>\s*<text[^>]*>Q5_K_S</text>', svg), key


def test_report_html_content_and_self_contained(tmp_path):
    folder = write_finished_run(tmp_path / "runs")
    pipeline.write_reports(folder)
    page = folder.report_html.read_text()
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "file verdict: FAIL (2 of 3 files" in text and "task verdict: good" in text
    assert "auto sweep, budget top-1 >= 90%, accuracy >= F16's - 25%, <= 1.1 MiB" in text
    assert "★ Q4_K_M" in text and "not measured: larger than the recommended file" in text
    assert "the word cat said twice" in text and "x <script>" in text  # answers, escaped
    assert "<script" not in page.replace("&lt;script", "")  # no script: nothing runs, nothing is fetched
    assert not re.search(r'(?:src|href)="(?!#)', page) and "<link" not in page and "@import" not in page
    # train_log.jsonl as typed entries: the resumed step 8 counts once, with its later loss; broken lines left out
    history = folder.train_history()
    assert [h.loss for h in history if h.step == 8] == [1.25] and len([h for h in history if h.eval_loss]) == 3
    md = folder.report_md.read_text()
    assert "task verdict: good" in md and "## Quantization" in md


def test_answers_are_the_recommended_files(tmp_path):
    """Both reports show the answers of the recommended file, wherever the smoke test lists it (an auto sweep
    that keeps every file lists the others after it)."""
    folder = write_finished_run(tmp_path / "runs")
    smoke = json.loads(folder.smoke_json.read_text())
    smoke["files"] = [smoke["files"][0], smoke["files"][2], smoke["files"][1]]  # F16, Q4_K_M (recommended), Q8_0
    folder.smoke_json.write_text(json.dumps(smoke))
    md, page = pipeline.write_reports(folder)
    assert "## Answers of `fake-Q4_K_M.gguf` on held-out prompts" in md.read_text()
    assert "<th>fake-Q4_K_M.gguf</th>" in page.read_text()
    smoke["files"][1].update(passed=False, problems=["answers differ"])  # the pick failed: F16 is offered
    folder.smoke_json.write_text(json.dumps(smoke))
    md, page = pipeline.write_reports(folder)
    assert "## Answers of `fake-F16.gguf` on held-out prompts" in md.read_text()
    assert "<th>fake-F16.gguf</th>" in page.read_text() and "★ Q4_K_M" not in page.read_text()


def test_fixed_quants_mark_the_modelfile_file(tmp_path):
    folder = write_finished_run(tmp_path / "runs", quants=["Q2_K", "Q4_K_M", "Q5_K_M"])
    quant = folder.quant_result()
    quant.files = [f for f in quant.files if f.measured]
    for f in quant.files:
        f.kept, f.misses = True, []
    quant.write(folder.quant_json)
    # The smallest kept file that passed the smoke test (Q2_K was not tested), as the Modelfile's.
    assert report_html.chosen(report_html.records(folder)).label == "Q4_K_M"
    page = pipeline.write_reports(folder)[1].read_text()
    assert "Fixed list of types" in page and 'id="recommended-kld"' in page and 'id="budget-top1"' not in page


def test_old_or_unfinished_run_shows_what_is_missing(tmp_path):
    folder = RunFolder(tmp_path / "old")
    folder.dir.mkdir()
    folder.state_json.write_text(json.dumps({"train": {"fingerprint": "x", "seconds": 1.0, "finished": 0.0}}))  # 0.1
    folder.smoke_json.write_text("{not json")
    md, page = pipeline.write_reports(folder)
    text = page.read_text()
    for line in ("missing: recipe.yaml, train.json", "missing: train_log.jsonl", "missing: quant.json",
                 "unreadable: " + html.escape(str(folder.smoke_json))):
        assert line in text, line
    assert "missing: recipe.yaml, train.json, smoke.json" in md.read_text()


def test_records_this_version_cannot_show_are_named_not_raised(tmp_path):
    folder = write_finished_run(tmp_path / "runs")
    smoke = json.loads(folder.smoke_json.read_text())
    smoke["files"] = []  # reads as a SmokeResult, but the report's table of answers needs a file
    folder.smoke_json.write_text(json.dumps(smoke))
    quant = json.loads(folder.quant_json.read_text())
    quant["files"][1]["mean_kld"] = "high"  # a value of another type
    folder.quant_json.write_text(json.dumps(quant))
    md, page = pipeline.write_reports(folder)
    assert "report.md could not be written from them (IndexError" in md.read_text()
    assert "quant.json could not be shown (ValueError" in md.read_text()
    text = page.read_text()
    assert "could not be shown: TypeError" in text and "task verdict: good" in text


def test_report_command(tmp_path, monkeypatch):
    folder = write_finished_run(tmp_path / "runs")
    runner = CliRunner()
    result = runner.invoke(cli_app, ["report", str(folder.dir)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(folder.report_md), str(folder.report_html)]
    opened = []
    monkeypatch.setattr(report_html, "open_report", lambda p: opened.append(p) or False)
    result = runner.invoke(cli_app, ["report", str(folder.dir), "--open"])
    assert opened == [folder.report_html] and f"no graphical browser here: open {folder.report_html.as_uri()}" in result.output
    result = runner.invoke(cli_app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path}: not a run folder (no recipe.yaml or state.json)"
    result = runner.invoke(cli_app, ["report", str(tmp_path / "runs" / "fkae")])  # a typo
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path / 'runs' / 'fkae'}: no such folder"


def test_open_report_needs_a_graphical_browser(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert report_html.open_report(tmp_path / "report.html") is False
    opened = []

    class Browser:
        def open(self, url):
            opened.append(url)
            return True
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr("webbrowser.get", lambda: Browser())
    assert report_html.open_report(tmp_path / "report.html") is True and opened == [(tmp_path / "report.html").as_uri()]


def test_results_screen_opens_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_finished_run(tmp_path / "runs", name="my-run")
    pipeline.write_reports(RunFolder(tmp_path / "runs" / "my-run"))
    browsers = []
    monkeypatch.setattr("edgetune.tui.display.open_report", lambda page: browsers.append(page) or len(browsers) > 1)

    async def go():
        app = EdgetuneApp(runner=FakeRunner(), autostart=True)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(600):  # a loaded machine: up to a minute
                if getattr(app.screen, "finished", False):
                    break
                await pilot.pause(0.1)
            run = app.screen
            assert run.finished
            button = run.query_one("#report")
            assert not button.disabled
            expected = ["report: runs/my-run/report.html (no graphical browser here)",
                        "report opened in the browser: runs/my-run/report.html"]
            for i, line in enumerate(expected):  # no browser, then one
                for _ in range(300):  # a click while the button shows its last press is ignored
                    if not button.has_class("-active"):
                        break
                    await pilot.pause(0.1)
                await pilot.click("#report")
                for _ in range(300):
                    if len(browsers) > i and str(run.query_one("#status").render()) == line:
                        break
                    await pilot.pause(0.1)
                assert str(run.query_one("#status").render()) == line
            assert [p.resolve() for p in browsers] == [(tmp_path / "runs/my-run/report.html").resolve()] * 2
    asyncio.run(go())


# ---------------------------------------------------------------- train.report_to


def test_report_to_is_validated_and_does_not_retrain():
    with pytest.raises(EdgetuneError, match=r"settings: train.report_to 'mlflow' is not one of none, tensorboard, wandb"):
        recipe_mod.from_dict({"train": {"report_to": "mlflow"}}, "settings")
    r = recipe_mod.from_dict({})
    before = pipeline.fingerprint(r, "train")
    r.train.report_to = "tensorboard"
    assert pipeline.fingerprint(r, "train") == before  # switching a tracker on does not redo training
    r.train.rank = 4
    assert pipeline.fingerprint(r, "train") != before


def test_a_missing_tracker_is_one_line(tmp_path, monkeypatch):
    real = train_mod.importlib.util.find_spec
    monkeypatch.setattr(train_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "wandb") else real(name, *a))
    spec = recipe_mod.TrainSpec(report_to="wandb")
    with pytest.raises(EdgetuneError) as e:
        train_mod.tracker_args(spec, RunFolder(tmp_path / "r"))
    assert str(e.value) == "train.report_to: wandb is not installed: pip install 'edgetune[wandb]'"
    assert train_mod.tracker_problem("tensorboard") == "tensorboard is not installed: pip install 'edgetune[tensorboard]'"


def test_wandb_runs_offline_without_a_key_or_network(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_SILENT",
                "WANDB_CONSOLE"):
        monkeypatch.setenv(key, "x")  # restored after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(train_mod, "USER_WANDB_MODE", None)
    monkeypatch.setattr(train_mod, "tracker_problem", lambda name: None)
    events = []
    folder = RunFolder(tmp_path / "runs" / "w")
    args = train_mod.tracker_args(recipe_mod.TrainSpec(report_to="wandb"), folder, events.append)
    assert args == {"report_to": ["wandb"], "run_name": "w"}
    import os
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(folder.dir)
    assert os.environ["WANDB_SILENT"] == "true" and os.environ["WANDB_CONSOLE"] == "off"
    assert f"upload later: wandb sync {folder.wandb}/offline-run-*" in events[0].message
    monkeypatch.setenv("WANDB_API_KEY", "k")  # a key, but the server does not answer (no network here)
    monkeypatch.setattr(train_mod, "WANDB_HOST", ("127.0.0.1", 9))
    assert train_mod.wandb_online(timeout=0.5) is False


def test_tensorboard_event_files_read_back(tiny_base, demo_jsonl, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'edgetune[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = make_recipe(tiny_base, demo_jsonl, tmp_path / "runs", train={"max_steps": 4, "eval_steps": 2, "save_steps": 4,
                                                                      "report_to": "tensorboard"})
    events = []
    pipeline.run(r, events.append, until="train")
    folder = RunFolder.of(r)
    assert any(f"tensorboard: event files in {folder.tensorboard}" == e.message for e in events)
    files = sorted(folder.tensorboard.rglob("events.out.tfevents.*"))
    assert files, list(folder.dir.rglob("*"))
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/loss", "train/tokens_per_s"} <= tags, tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    logged = {h.step: h.loss for h in folder.train_history() if h.loss is not None}
    assert [round(e.value, 5) for e in acc.Scalars("train/loss")] == [round(logged[2], 5), round(logged[4], 5)]


def test_training_step_chooses_the_tracker(monkeypatch):
    from edgetune.device import Estimate
    monkeypatch.setattr("edgetune.tui.screens.training.estimate", lambda recipe, stats: Estimate(
        "cpu", "fp32", "fp32", "2 threads", 100.0, 5e6, 512, 8))
    installed = {"tensorboard": True, "wandb": False}
    monkeypatch.setattr("edgetune.tui.screens.training.tracker_problem", lambda name: None if installed.get(name, True)
                        else f"{name} is not installed: pip install 'edgetune[{name}]'")

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            from edgetune.tui.screens.training import TrainingScreen
            await app.push_screen(TrainingScreen())
            await pilot.pause()
            screen = app.screen
            assert screen.query_one("#report_to").value == "none"
            screen.query_one("#report_to").value = "wandb"
            await pilot.pause()
            assert str(screen.query_one("#report-help").render()) == "needs: pip install 'edgetune[wandb]'"
            await pilot.press("ctrl+n")
            await pilot.pause()
            error = str(screen.query_one("#error").render())
            assert error == "settings: train.report_to wandb is not installed: pip install 'edgetune[wandb]'", error
            assert app.screen is screen
            screen.query_one("#report_to").value = "tensorboard"
            await pilot.pause()
            screen.apply()
            assert app.recipe.train.report_to == "tensorboard"
    asyncio.run(go())
