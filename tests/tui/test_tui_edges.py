"""The wizard's rough edges under tmux (issue 24), each driven with Pilot: shapes that do not need
colour, visible focus, Ctrl+T on the recommended file, no Cancel after the run, step times with their
unit, the Results buttons at 80x24, plain words, the column mapping and the too-few-steps warning."""
import asyncio
import json

from edgetune.inputs.data import TokenStats
from edgetune.tui.app import EdgetuneApp

from tui_fixtures import FakeChatSession, FakeRunner, wait_until


def test_ticked_and_unticked_differ_without_colour():
    from edgetune.tui.screens.base_model import BaseModelScreen
    from edgetune.tui.screens.export import ExportScreen

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, BaseModelScreen)
            radios = {b.id: str(b.render()) for b in app.screen.query("RadioButton")}
            assert radios["kind-demo"].startswith("▐●▌") and radios["kind-gguf"].startswith("▐ ▌")
            await app.push_screen(ExportScreen())
            await pilot.pause()
            box = app.screen.query_one("#auto_mixed")
            assert str(box.render()).startswith("▐ ▌")
            box.value = True
            assert str(box.render()).startswith("▐X▌")
            quants = app.screen.query_one("#quants")
            lines = [quants.render_line(y).text for y in range(len(quants.options))]
            assert lines[0].startswith("▐ ▌ auto") and any(t.startswith("▐X▌ Q4_K_M") for t in lines)
    asyncio.run(go())


def test_focus_shows_without_colour():
    from edgetune.tui.screens.training import TrainingScreen

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(TrainingScreen())
            await pilot.pause()
            rank, lr = app.screen.query_one("#f-rank"), app.screen.query_one("#f-lr")
            rank.focus()
            await pilot.pause()
            assert rank.styles.border_left[0] == "outer" and lr.styles.border_left[0] in ("", "none")
            await app.pop_screen()
            await pilot.pause()
            kinds, path = app.screen.query_one("#kind"), app.screen.query_one("#path")  # full-size fields
            kinds.focus()
            await pilot.pause()
            assert kinds.styles.border_left[0] == "heavy" and path.styles.border_left[0] == "tall"
            path.focus()
            await pilot.pause()
            assert kinds.styles.border_left[0] == "tall" and path.styles.border_left[0] == "heavy"
    asyncio.run(go())


def _fake_files(root):
    gguf = root / "runs" / "my-run" / "gguf"
    gguf.mkdir(parents=True)
    for label, size in (("F16", 3000), ("Q8_0", 2000), ("Q4_K_M", 1000)):
        (gguf / f"my-run-{label}.gguf").write_bytes(b"\0" * size)
    return gguf


def test_finished_run_screen_at_80x24(tmp_path, monkeypatch):
    """Ctrl+T opens the recommended (here: smallest kept) file, not F16; the footer no longer offers
    Cancel; the Results buttons are on screen at 80x24; step times keep their unit."""
    monkeypatch.chdir(tmp_path)
    gguf = _fake_files(tmp_path)
    ticks = iter([0.0, 35.0] + [35.0] * 1000)
    monkeypatch.setattr("edgetune.tui.widgets.step_table.clock", lambda: next(ticks))
    opened = []

    def chat_session(path, system=""):
        opened.append(str(path))
        return FakeChatSession(path, system)

    async def go():
        app = EdgetuneApp(runner=FakeRunner(steps=3), chat_session=chat_session, autostart=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunScreen" and app.screen.finished)
            run = app.screen
            await pilot.pause()
            shown = {b.binding.description for b in app.active_bindings.values() if b.enabled and b.binding.show}
            assert "Cancel run" not in shown
            for name in ("chat", "compare", "folder"):
                button = run.query_one(f"#{name}")
                assert button.region.height > 0 and button.region.bottom <= 24, name
            steps = run.query_one("#steps")
            assert steps.get_cell("train", "time") == "35.0 s"
            assert steps.columns["time"].get_render_width(steps) >= len("35.0 s") + 2
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ChatScreen")
        assert opened and opened[0].endswith("my-run-Q4_K_M.gguf")
    asyncio.run(go())
    assert gguf.is_dir()


def test_plain_words_in_the_training_step():
    from edgetune.tui.screens.training import TrainingScreen

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(TrainingScreen())
            await pilot.pause()
            text = " ".join(str(w.render()) for w in app.screen.query("Static, Button"))
            assert "seed guide" not in text and "Seed defaults" not in text and "a usual LoRA start" in text
    asyncio.run(go())


def test_training_step_warns_of_too_few_steps_and_proposes_a_batch_size():
    from edgetune.tui.screens.training import TrainingScreen

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        app.recipe.train.batch_size, app.recipe.train.grad_accum, app.recipe.train.epochs = 16, 2, 3
        app.recipe.train.max_steps, app.recipe.data.eval_split = -1, 0.1
        app.data_stats = TokenStats(57, 10.0, 10, 12, 14, 16, 0, 0, 0, 128, [], [(5, 10)] * 57)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(TrainingScreen())
            await pilot.pause()
            line = str(app.screen.query_one("#steps-plan").render())
            assert "too few steps: 51 training rows at batch 16 x accum 2, 3 epochs give only 6" in line
            assert "try batch size 4 with grad accum 1 (39 steps)" in line
            app.screen.query_one("#f-batch_size").value = "4"
            app.screen.query_one("#f-grad_accum").value = "1"
            await pilot.pause()
            assert str(app.screen.query_one("#steps-plan").render()) == "39 optimizer steps for 51 training rows"
    asyncio.run(go())


def test_dataset_step_offers_a_mapping_from_the_files_own_columns(tmp_path, tiny_base):
    from edgetune.tui.screens.dataset import DatasetScreen
    qa = tmp_path / "qa.csv"
    qa.write_text("question,answer\n" + "".join(f"reverse w{i},{i}w\n" for i in range(8)))

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        app.recipe.base = str(tiny_base)
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(DatasetScreen())
            await pilot.pause()
            screen = app.screen
            screen.query_one("#path").value = str(qa)
            await pilot.click("#check")
            summary = screen.query_one("#summary")
            await wait_until(pilot, lambda: "format alpaca: 8 rows" in str(summary.render()))
            assert screen.query_one("#columns").display
            assert screen.query_one("#col-instruction").value == "question"
            assert screen.query_one("#col-output").value == "answer"
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: app.screen is not screen)
        assert app.recipe.data.columns == {"instruction": "question", "output": "answer"}
    asyncio.run(go())


def test_batch_screen_lists_a_broken_adapter_folder_with_why(tmp_path):
    from edgetune.tui.screens.batch import BatchScreen
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(b"")

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(100, 32)) as pilot:
            await app.push_screen(BatchScreen())
            await pilot.pause()
            app.screen.query_one("#folder").value = str(tmp_path)
            app.screen.scan()
            table = app.screen.query_one("#rows")
            assert table.row_count == 1 and table.get_cell_at((0, 1)) == "broken"
            assert "without adapter_config.json" in table.get_cell_at((0, 2))
    asyncio.run(go())


def test_template_reason_is_written_for_a_person(tiny_base):
    from edgetune import templates
    from edgetune.inputs.base import load_tokenizer
    chosen = templates.choose("alpaca", load_tokenizer(str(tiny_base)))
    assert chosen.reason == "the template you chose"
    assert json.dumps(chosen.reason).count("recipe") == 0


def test_a_failed_runs_whole_error_shows_markup_and_all(tmp_path):
    from edgetune.tui.screens.results import ResultsScreen

    from tui_fixtures import make_run
    folder = make_run(tmp_path, "bad", state="failed", smoke=False, gguf=False)
    error = ("data.csv:2: cannot tell the format from fields ['a'] (need 'instruction'+'output' (alpaca), "
             "'messages' (chat) or 'text'; or map yours with data.columns, e.g. {instruction: question}) [/b]")
    folder.mark_outcome("failed", "train", error)

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            await app.push_screen(ResultsScreen(folder))
            await pilot.pause()
            title = app.screen.query_one("#run-title")
            text = " ".join(title.render_line(y).text.strip() for y in range(title.size.height))
            assert error in text, text
            assert app.screen.query_one("#chat").disabled and app.screen.query_one("#serve").disabled
    asyncio.run(go())
