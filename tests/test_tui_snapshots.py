"""Snapshots of every screen at 80x24 and 120x40 (pytest-textual-snapshot; --snapshot-update to renew)."""
import pytest

from edgetune.tui.app import EdgetuneApp

SIZES = [(80, 24), (120, 40)]
SUMMARY = {
    "prompts": ["p"], "expected": ["x"], "base": {"answers": [""], "accuracy": 0.0},
    "hf": {"answers": ["x"], "accuracy": 1.0, "perplexity": 1.5},
    "files": [{"file": f"my-run-{q}.gguf", "path": f"/runs/my-run-{q}.gguf", "bytes": 2**20 * n,
               "bits_per_weight": b, "perplexity": 1.5, "agreement": 1.0, "accuracy": 1.0,
               "gen_tokens_per_s": 900.0, "passed": True, "problems": []}
              for q, n, b in (("F16", 2, 16.0), ("Q8_0", 1, 8.5), ("Q4_K_M", 1, 4.9))],
}


def quiet_runner(recipe, on_event, cancel):
    return SUMMARY


def screen_setup(name):
    async def run_before(pilot):
        from edgetune.tui.screens import batch, chat, dataset, export, help, summary, training
        app = pilot.app
        screens = {"dataset": dataset.DatasetScreen, "training": training.TrainingScreen,
                   "export": export.ExportScreen, "summary": summary.SummaryScreen, "chat": chat.ChatScreen,
                   "batch": batch.BatchScreen, "help": help.HelpScreen}
        if name in screens:
            await app.push_screen(screens[name]())
        if name == "run":
            for _ in range(60):
                if getattr(app.screen, "finished", False):
                    break
                await pilot.pause(0.05)
        await pilot.pause()
    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ["base", "dataset", "training", "export", "summary", "run", "chat", "batch", "help"])
def test_screen_snapshot(snap_compare, name, size):
    app = EdgetuneApp(runner=quiet_runner, autostart=name == "run")
    assert snap_compare(app, terminal_size=size, run_before=screen_setup(name))
