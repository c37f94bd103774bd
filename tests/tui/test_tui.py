"""The terminal UI driven with Pilot: wizard, run (fake and real), chat, errors, cancel."""
import asyncio

import pytest

from edgetune.runs import RunFolder
from edgetune.tui.app import EdgetuneApp

from tui_fixtures import FakeRunner, wait_until


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
            verdicts = str(app.screen.query_one("#accuracy").render())
        assert "task verdict: good (held-out accuracy 0% -> 100%" in verdicts and "file verdict: FAIL" in verdicts
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
            assert RunFolder.of(tiny_recipe).report_html.is_file() and not run.query_one("#report").disabled
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
            chat.query_one("#message").text = "the last word of red fox tiger is"
            await pilot.press("enter")
            await wait_until(pilot, lambda: chat.sessions[0].last_stats != "", seconds=60)
            await pilot.pause(0.2)
            texts = [str(s.render()) for s in chat.query(".msg")]
            assert any("tok/s" in t for t in texts)
            assert chat.replies[0].strip() != ""
            chat.sessions[0].close()
    asyncio.run(go())


def test_batch_rows_fail_one_by_one(tmp_path, monkeypatch):
    """Adapters whose base cannot be found fail their own row; the screen reports and stays usable."""
    from tui_fixtures import write_fake_adapters
    monkeypatch.chdir(tmp_path)
    write_fake_adapters(tmp_path / "adapters")
    (tmp_path / "adapters" / "beta" / "adapter_config.json").write_text('{"base_model_name_or_path": "no/such-base"}')
    (tmp_path / "adapters" / "alpha" / "adapter_config.json").write_text("{}")

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            app.action_batch()
            await pilot.pause()
            batch = app.screen
            batch.query_one("#folder").value = "adapters"
            batch.start()
            await wait_until(pilot, lambda: not app.running)
            table = batch.query_one("#rows")
            assert [str(table.get_cell(k, "status")) for k in ("alpha", "beta")] == ["failed", "failed"]
            assert "no base_model_name_or_path" in str(table.get_cell("alpha", "files / error"))
            assert "0/2 adapters converted" in str(batch.query_one("#error").render())
    asyncio.run(go())


def test_quitting_during_a_run_asks_then_cancels():
    runner = FakeRunner(wait_for_cancel=True)

    async def go():
        app = EdgetuneApp(runner=runner, autostart=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.running)
            await pilot.press("q")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "ConfirmScreen"
            await pilot.press("n")
            await pilot.pause()
            assert app.running and not runner.cancelled.cancelled
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert runner.cancelled.cancelled
    asyncio.run(go())


def test_chat_message_box_takes_several_lines_and_a_paste_whole(tmp_path, monkeypatch):
    """Ctrl+J starts a new line, a paste (as the terminal delivers it, to the app) keeps its blank
    lines, Enter sends it all as one message."""
    from textual import events

    from edgetune.tui.screens.chat import ChatScreen

    from tui_fixtures import EMPTY_GGUF, FakeChatSession

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-Q8_0.gguf").write_bytes(EMPTY_GGUF)

    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(ChatScreen("a-Q8_0.gguf"))
            chat = app.screen
            box = chat.query_one("#message")
            await wait_until(pilot, lambda: app.focused is box)  # focused once the file is loaded
            await pilot.press(*"line one", "ctrl+j", *"line two")
            await pilot.press("enter")
            await wait_until(pilot, lambda: chat.streaming == 0 and chat.sessions[0].sent)
            assert chat.sessions[0].sent == ["line one\nline two"]
            assert box.text == ""
            await pilot.press("enter")  # nothing typed: nothing sent
            app.post_message(events.Paste("### Instruction:\nsum\n\n### Input:\n2 3"))
            await pilot.pause()
            await pilot.press("enter")
            await wait_until(pilot, lambda: len(chat.sessions[0].sent) == 2 and chat.streaming == 0)
            assert chat.sessions[0].sent[1] == "### Instruction:\nsum\n\n### Input:\n2 3"
            you = [str(s.render()) for s in chat.query(".msg-you")]
            assert "line one\nline two" in you[0]
    asyncio.run(go())


def test_wizard_shows_the_hub_line_inline_when_an_id_cannot_be_had(tmp_path, tiny_base, monkeypatch):
    """Offline and not cached: the Base model and Dataset steps show the CLI's line and stay put."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from edgetune import hub
    from edgetune.errors import EdgetuneError
    with pytest.raises(EdgetuneError) as expected:
        hub.check_id("some-org/some-model")

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            screen.query_one("#kind-hub").value = True
            screen.query_one("#path").value = "some-org/some-model"
            await pilot.press("ctrl+n")
            # the check runs in a thread: the screen stays live meanwhile
            await wait_until(pilot, lambda: str(screen.query_one("#error").render()) == str(expected.value))
            assert app.screen is screen and app.recipe.base == "demo"
            assert not screen.query_one("#next").disabled
            from edgetune.tui.screens.dataset import DatasetScreen
            app.recipe.base = str(tiny_base)
            await app.push_screen(DatasetScreen())
            await pilot.pause()
            app.screen.query_one("#path").value = "some-org/some-data"
            await pilot.click("#check")
            error = app.screen.query_one("#error")
            await wait_until(pilot, lambda: "some-org/some-data" in str(error.render()))
            assert "this hub dataset is not in the local cache and the hub cannot be reached" in str(error.render())
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: not app.screen.query_one("#next").disabled)
            assert str(error.render()).startswith("some-org/some-data")
            assert app.screen.__class__.__name__ == "DatasetScreen" and app.recipe.data.path == "demo"
    asyncio.run(go())


def test_wizard_stays_live_while_a_hub_id_is_checked(monkeypatch):
    """The hub check runs off the UI thread: the step says it is checking, ignores a second Next,
    keeps answering keys, and moves on when the check passes."""
    import threading

    from edgetune.tui.screens import base_model
    release, calls = threading.Event(), []

    def slow_check(repo_id, repo_type="model"):
        calls.append(repo_id)
        assert release.wait(10)
        return "on the hub"
    monkeypatch.setattr(base_model, "check_id", slow_check)

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            screen.query_one("#kind-hub").value = True
            screen.query_one("#path").value = "some-org/some-model"
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: calls == ["some-org/some-model"])
            assert str(screen.query_one("#error").render()) == "checking…" and screen.query_one("#next").disabled
            await pilot.press("ctrl+n")  # ignored while the check runs
            screen.query_one("#path").focus()
            await pilot.press("end", "x")  # the UI answers keys meanwhile
            assert screen.query_one("#path").value == "some-org/some-modelx"
            assert app.screen is screen and app.recipe.base == "demo"
            release.set()
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "DatasetScreen")
            assert app.recipe.base == "some-org/some-model" and calls == ["some-org/some-model"]
    asyncio.run(go())


def test_training_step_shows_device_dtype_and_expected_tokens_per_s(tiny_base):
    """Measured in a worker (the screen is usable meanwhile), computed by the core."""
    from transformers import AutoConfig

    from edgetune.steps.train.train import plan
    p = plan(EdgetuneApp().recipe.train, AutoConfig.from_pretrained(tiny_base))

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        app.recipe.base = str(tiny_base)
        async with app.run_test(size=(120, 40)) as pilot:
            from edgetune.tui.screens.training import TrainingScreen
            await app.push_screen(TrainingScreen())
            line = app.screen.query_one("#estimate")
            await wait_until(pilot, lambda: "trained tokens/s" in str(line.render()))
            assert "expected ~" in str(line.render()) and "an estimate" in str(line.render())
            hint = str(app.screen.query_one("#plan").render())
            assert f"Detected {p.device.upper()}" in hint and p.dtype in hint and p.why in hint
    asyncio.run(go())


def test_the_wizard_order_is_written_once():
    from edgetune.tui.screens.pages import PAGES

    async def walk():
        app = EdgetuneApp()
        async with app.run_test(size=(100, 32)) as pilot:
            for i, page in enumerate(PAGES):
                screen = page()
                app.push_screen(screen)
                await pilot.pause()
                following = screen.next_screen() if i < len(PAGES) - 1 else None
                assert screen.step == i and (following is None or type(following) is PAGES[i + 1])
                trail = str(screen.query_one(".trail").render())
                assert [p.page_title for p in PAGES] == [t.strip() for t in trail.split("›")]

    asyncio.run(walk())
