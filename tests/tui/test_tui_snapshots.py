"""Snapshots of every TUI screen at 80x24 and 120x40 (pytest-textual-snapshot; --snapshot-update to accept).

Everything that varies between machines is pinned: the working folder (paths show relative to it),
step durations (the step table's clock), the pipeline and chat sessions (fakes with fixed output)."""
import json

import pytest
from textual.widgets import Input

from edgetune.tui.app import EdgetuneApp

from tui_fixtures import EMPTY_GGUF, FakeChatSession, FakeRunner, write_fake_adapters

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("edgetune.tui.widgets.step_table.clock", lambda: 0.0)
    monkeypatch.setattr("edgetune.threads.busy_cpus", lambda cpus: 0.0)  # other processes' load: none
    return tmp_path


def app(**kwargs) -> EdgetuneApp:
    return EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession, **kwargs)


async def settle(pilot, condition=lambda: True, seconds: float = 60.0) -> None:
    """Let workers finish and the screen repaint before the snapshot: the condition must hold on five
    polls in a row (a late worker's message can redraw what it checked)."""
    held = 0
    for _ in range(int(seconds / 0.05)):
        held = held + 1 if condition() else 0
        if held == 5:
            break
        await pilot.pause(0.05)
    else:
        raise AssertionError("the screen did not settle")
    # A blinking cursor is on or off at the snapshot's instant: hold it still.
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    # A DataTable sizes its columns on the refresh after its rows arrive: give it a few frames.
    for _ in range(3):
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def push(screen_factory, condition=lambda app: True):
    async def run_before(pilot):
        await pilot.app.push_screen(screen_factory())
        await settle(pilot, lambda: condition(pilot.app))
    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_base_model_screen(snap_compare, workdir, size):
    assert snap_compare(app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_dataset_screen_with_a_skipped_row(snap_compare, workdir, tiny_base, size):
    rows = [{"instruction": f"Say this word twice: w{i}", "input": "", "output": f"w{i} w{i}"} for i in range(6)]
    lines = [json.dumps(r) for r in rows[:3]] + ['{"instruction": "no output here"}'] + [json.dumps(r) for r in rows[3:]]
    (workdir / "data.jsonl").write_text("\n".join(lines) + "\n")
    a = app()
    a.recipe.base = str(tiny_base)
    a.recipe.data.path, a.recipe.data.on_bad_row = "data.jsonl", "skip"
    from edgetune.tui.screens.dataset import DatasetScreen
    def done(app):  # the summary line and the preview table are filled by separate callbacks
        inspecting = any(w.group == "inspect" and not w.is_finished for w in app.workers)
        return not inspecting and "format alpaca" in str(app.screen.query_one("#summary").render()) and \
            app.screen.query_one("#preview").row_count > 0
    assert snap_compare(a, terminal_size=size, run_before=push(DatasetScreen, done))


@pytest.mark.parametrize("size", SIZES)
def test_training_screen(snap_compare, workdir, size, monkeypatch):
    from edgetune.device import Estimate
    from edgetune.tui.screens.training import TrainingScreen
    # The device, its bf16 units and the measured matmul rate are this machine's: pinned.
    why = "bf16 autocast, fp32 LoRA weights: the CPU has AVX512-BF16"
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("edgetune.steps.train.train.cpu_bf16", lambda: (True, why))
    monkeypatch.setattr("edgetune.tui.screens.training.estimate", lambda recipe, stats: Estimate(
        "cpu", "bf16", why, "2 threads (one per physical core)", 100.0, 5e6, 512, 8))
    shown = lambda app: "trained tokens/s" in str(app.screen.query_one("#estimate").render())  # noqa: E731
    assert snap_compare(app(), terminal_size=size, run_before=push(TrainingScreen, shown))


@pytest.mark.parametrize("size", SIZES)
def test_export_screen(snap_compare, workdir, size):
    from edgetune.tui.screens.export import ExportScreen
    assert snap_compare(app(), terminal_size=size, run_before=push(ExportScreen))


@pytest.mark.parametrize("size", SIZES)
def test_summary_screen(snap_compare, workdir, size):
    from edgetune.tui.screens.summary import SummaryScreen
    assert snap_compare(app(), terminal_size=size, run_before=push(SummaryScreen))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tab", ["results", "progress"])
def test_run_screen_finished(snap_compare, workdir, size, tab):
    async def run_before(pilot):
        await settle(pilot, lambda: getattr(pilot.app.screen, "finished", False))
        from textual.widgets import TabbedContent
        pilot.app.screen.query_one(TabbedContent).active = tab
        await settle(pilot)
    assert snap_compare(app(autostart=True), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_chat_screen_comparing_two_files(snap_compare, workdir, size):
    from edgetune.tui.screens.chat import ChatScreen

    for name in ("a-Q8_0.gguf", "a-Q4_K_M.gguf"):
        (workdir / name).write_bytes(EMPTY_GGUF)

    async def run_before(pilot):
        await pilot.app.push_screen(ChatScreen("a-Q8_0.gguf", "a-Q4_K_M.gguf"))
        chat = pilot.app.screen
        await settle(pilot, lambda: len(chat.sessions) == 2)
        box = chat.query_one("#message")
        box.cursor_blink = False  # a blinking cursor would make the picture depend on timing
        box.text = "What is the last word of: red fox"
        await pilot.press("enter")
        await settle(pilot, lambda: chat.streaming == 0 and all(chat.replies))
    assert snap_compare(app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_batch_screen_after_a_scan(snap_compare, workdir, size):
    write_fake_adapters(workdir / "adapters")
    from edgetune.tui.screens.batch import BatchScreen

    async def run_before(pilot):
        await pilot.app.push_screen(BatchScreen())
        pilot.app.screen.query_one("#folder").value = "adapters"
        pilot.app.screen.scan()
        await settle(pilot)
    assert snap_compare(app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare, workdir, size):
    assert snap_compare(app(), terminal_size=size, press=["f1"])


@pytest.mark.parametrize("size", SIZES)
def test_file_picker(snap_compare, workdir, monkeypatch, size):
    project = workdir / "project"  # the tree's root label: a fixed name
    (project / "data").mkdir(parents=True)
    for name in ("train.jsonl", "notes.txt", "eval.csv"):
        (project / name).write_text("x")
    monkeypatch.chdir(project)
    from edgetune.tui.screens.file_picker import FilePickerScreen
    from edgetune.tui.widgets.path_tree import PathTree

    def ready(app):
        tree = app.screen.query(PathTree)
        return bool(tree) and tree.first().root.children
    assert snap_compare(app(), terminal_size=size, run_before=push(
        lambda: FilePickerScreen("Choose a dataset file", ".", (".jsonl", ".csv")), ready))
