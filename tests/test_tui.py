"""The terminal UI driven with Pilot: wizard, run (fake and real), chat, errors, cancel."""
import asyncio
import json
import threading

import pytest

from edgetune.events import Cancelled, Event
from edgetune.tui.app import EdgetuneApp

FAKE_SUMMARY = {
    "prompts": ["p"], "expected": ["x"], "base": {"answers": [""], "accuracy": 0.0},
    "hf": {"answers": ["x"], "accuracy": 1.0, "perplexity": 1.5},
    "files": [{"file": f"my-run-{q}.gguf", "path": f"/runs/my-run-{q}.gguf", "bytes": 2**20 * n,
               "bits_per_weight": b, "perplexity": 1.5, "agreement": 1.0, "accuracy": 1.0,
               "gen_tokens_per_s": 900.0, "passed": True, "problems": []}
              for q, n, b in (("F16", 2, 16.0), ("Q8_0", 1, 8.5), ("Q4_K_M", 1, 4.9))],
}


class FakeRunner:
    """Stands in for pipeline.run: records the recipe, emits a few events, returns a summary."""

    def __init__(self, wait_for_cancel=False):
        self.recipe = None
        self.wait_for_cancel = wait_for_cancel

    def __call__(self, recipe, on_event, cancel):
        self.recipe = recipe
        on_event(Event("train", "start", "train"))
        for step in range(1, 4):
            on_event(Event("train", "progress", step=step, total=3, loss=2.0 / step, lr=1e-3, tokens_per_s=100.0))
        if self.wait_for_cancel:
            for _ in range(200):
                if cancel.cancelled:
                    raise Cancelled("training cancelled at step 3; rerun to resume")
                threading.Event().wait(0.05)
        on_event(Event("train", "done", "train: 1.0s"))
        return FAKE_SUMMARY


async def wait_until(pilot, condition, seconds=60.0):
    for _ in range(int(seconds / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not reached in time")


def test_wizard_reaches_run_with_demo_defaults():
    runner = FakeRunner()

    async def go():
        app = EdgetuneApp(runner=runner)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(5):
                await pilot.press("ctrl+n")
                await pilot.pause()
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunScreen" and app.screen.finished)
            table = app.screen.query_one("#smoke")
            assert table.row_count == 3
            assert "base 0% -> fine-tuned 100%" in str(app.screen.query_one("#accuracy").render())
    asyncio.run(go())
    assert runner.recipe.base == "demo" and runner.recipe.data.path == "demo"
    assert runner.recipe.export.quants == ["Q8_0", "Q4_K_M"] and runner.recipe.name == "my-run"


def test_bad_dataset_shows_error_inline(tmp_path, tiny_base):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n')

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        app.recipe.base = str(tiny_base)
        async with app.run_test(size=(80, 24)) as pilot:
            from edgetune.tui.screens.dataset import DatasetScreen
            await app.push_screen(DatasetScreen())
            await pilot.pause()
            app.screen.query_one("#path").value = str(bad)
            await pilot.click("#check")
            error = app.screen.query_one("#error")
            await wait_until(pilot, lambda: "bad.jsonl:2" in str(error.render()))
            assert "missing field 'output'" in str(error.render())
            assert "Traceback" not in str(error.render())
    asyncio.run(go())


def test_bad_training_value_is_refused_inline():
    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            from edgetune.tui.screens.training import TrainingScreen
            await app.push_screen(TrainingScreen())
            await pilot.pause()
            app.screen.query_one("#f-rank").value = "0"
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert "train.rank 0 must be at least 1" in str(app.screen.query_one("#error").render())
            assert app.screen.__class__.__name__ == "TrainingScreen"
    asyncio.run(go())


def test_cancel_stops_the_run():
    async def go():
        app = EdgetuneApp(runner=FakeRunner(wait_for_cancel=True), autostart=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunScreen")
            await pilot.pause(0.3)
            await pilot.press("ctrl+c")
            await pilot.pause()
            await pilot.press("y")
            run = app.screen_stack[-1]
            await wait_until(pilot, lambda: run.finished)
            assert "stopped: training cancelled at step 3" in str(run.query_one("#error").render())
            assert app.running is False
    asyncio.run(go())


def test_real_tiny_run_through_the_ui_shows_the_smoke_table(tiny_recipe):
    async def go():
        app = EdgetuneApp(recipe=tiny_recipe, autostart=True)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunScreen")
            run = app.screen
            await wait_until(pilot, lambda: run.finished, seconds=300)
            assert str(run.query_one("#error").render()) == ""
            assert run.query_one("#smoke").row_count == 3
            states = [run.query_one("#steps").state(s) for s in ("train", "merge", "convert",
                                                                                  "quantize", "smoke")]
            assert states == ["done"] * 5
    asyncio.run(go())


def test_chat_streams_an_answer(tiny_base, tmp_path):
    from edgetune.convert import convert_hf_to_gguf
    gguf = convert_hf_to_gguf(tiny_base, tmp_path / "tiny-F16.gguf", "f16")

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            app.action_chat(str(gguf))
            await pilot.pause()
            chat = app.screen
            await wait_until(pilot, lambda: len(chat.sessions) == 1)
            chat.query_one("#max_tokens").value = "12"
            chat.query_one("#message").value = "the last word of red fox tiger is"
            await pilot.press("enter")
            await wait_until(pilot, lambda: chat.sessions[0].last_stats != "", seconds=60)
            await pilot.pause(0.2)
            texts = [str(s.render()) for s in chat.query(".msg")]
            assert any("tok/s" in t for t in texts)
            assert chat.replies[0].strip() != ""
            chat.sessions[0].close()
    asyncio.run(go())
