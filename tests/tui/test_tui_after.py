"""After training, in the TUI (Pilot): chat that streams, queues, stops and takes commands; the
Runs screen (open, chat, serve, resume, delete; odd folders as rows); Results reopened."""
import asyncio
import json

import pytest

from edgetune.tui.app import EdgetuneApp

from tui_fixtures import EMPTY_GGUF, FakeChatSession, FakeRunner, FakeServers, make_run, wait_until


class SlowSession(FakeChatSession):
    delay = 0.05


def lines(screen, cls=".msg"):
    return [str(s.render()) for s in screen.query(cls)]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Each test in its own folder, with the m.gguf its fake chat sessions open."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(EMPTY_GGUF)


async def open_chat(app, pilot, path="m.gguf"):
    app.action_chat(path)
    await pilot.pause()
    chat = app.screen
    await wait_until(pilot, lambda: len(chat.sessions) == 1)
    return chat


async def type_and_send(pilot, chat, text):
    chat.query_one("#message").text = text
    chat.query_one("#message").focus()
    await pilot.press("enter")


def test_chat_queues_a_message_sent_while_a_reply_streams_and_stops_on_escape():
    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=SlowSession)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await open_chat(app, pilot)
            await type_and_send(pilot, chat, "one two three four five six seven eight nine ten eleven twelve")
            await wait_until(pilot, lambda: chat.streaming and "says" in chat.replies[0])  # streamed, not at the end
            await type_and_send(pilot, chat, "second")
            await pilot.pause()
            assert any("you (queued):" in t and "second" in t for t in lines(chat))
            assert "1 queued" in str(chat.query_one("#error").render())
            await wait_until(pilot, lambda: len(chat.sessions[0].sent) == 2 and not chat.streaming)
            assert chat.sessions[0].sent == ["one two three four five six seven eight nine ten eleven twelve", "second"]
            assert not any("queued" in t for t in lines(chat))
            # a long reply: Escape stops it (the screen stays), well before its end
            await type_and_send(pilot, chat, " ".join(["w"] * 200))
            await wait_until(pilot, lambda: chat.streaming and len(chat.replies[0]) > 10)
            await pilot.press("escape")
            await wait_until(pilot, lambda: not chat.streaming)
            assert app.screen is chat
            assert chat.sessions[0].messages[-1]["tokens"] < 100 and "stopped" in lines(chat)[-1]
            await pilot.press("escape")  # nothing streaming: back
            await pilot.pause()
            assert app.screen is not chat
    asyncio.run(go())


def test_chat_commands_are_not_sent_to_the_model_and_control_characters_show_escaped():
    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession)
        async with app.run_test(size=(100, 32)) as pilot:
            chat = await open_chat(app, pilot)
            await type_and_send(pilot, chat, "bell\x07 and\x08 back\x1b[2J")
            await wait_until(pilot, lambda: chat.sessions[0].sent and not chat.streaming)
            assert any("back\\e[2J" in t and "bell\\x07" in t for t in lines(chat, ".msg-model"))
            assert not any("\x1b" in t or "\x08" in t for t in lines(chat))
            await type_and_send(pilot, chat, "/system be brief")
            await pilot.pause()
            assert chat.query_one("#system").value == "be brief" and chat.sessions[0].system == "be brief"
            assert "[system prompt set]" in str(chat.query_one("#error").render())  # shown, not taken for markup
            await type_and_send(pilot, chat, "/help")
            await pilot.pause()
            assert any("/save" in t and "/reset" in t for t in lines(chat))
            await type_and_send(pilot, chat, "/sytem x")
            await pilot.pause()
            assert "unknown command /sytem" in str(chat.query_one("#error").render())
            await type_and_send(pilot, chat, "/reset")
            await pilot.pause()
            assert chat.sessions[0].messages == [] and lines(chat) == []
            assert "[conversation forgotten]" in str(chat.query_one("#error").render())
            assert chat.sessions[0].sent == ["bell\x07 and\x08 back\x1b[2J"]  # no command reached the model
            await type_and_send(pilot, chat, "/exit")
            await pilot.pause()
            assert app.screen is not chat
    asyncio.run(go())


def test_regenerate_and_edit_the_last_message():
    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await open_chat(app, pilot)
            await type_and_send(pilot, chat, "first")
            await wait_until(pilot, lambda: len(chat.sessions[0].sent) == 1 and not chat.streaming)
            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: len(chat.sessions[0].sent) == 2 and not chat.streaming)
            assert chat.sessions[0].sent == ["first", "first"]
            assert len(lines(chat, ".msg-model")) == 2  # the "loaded" line and one reply, not two
            await pilot.press("ctrl+o")
            await pilot.pause()
            assert chat.query_one("#message").text == "first" and chat.sessions[0].messages == []
            chat.query_one("#message").text = "first, edited"
            await pilot.press("enter")
            await wait_until(pilot, lambda: len(chat.sessions[0].sent) == 3 and not chat.streaming)
            assert [m["content"] for m in chat.sessions[0].messages] == ["first, edited", "m says: first, edited"]
            assert len(lines(chat, ".msg-you")) == 1
    asyncio.run(go())


def test_runs_screen_lists_opens_chats_resumes_and_deletes(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)  # no browser: the report's path is shown
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    runs = tmp_path / "runs"
    done = make_run(runs, "good")
    make_run(runs, "broken", state="failed", smoke=False)
    (runs / "half").mkdir(parents=True)
    (runs / "half" / "state.json").write_text('{"steps": {"train": ')  # cut mid-write
    (runs / "old").mkdir()
    (runs / "old" / "state.json").write_text(json.dumps({"train": {"fingerprint": "x", "seconds": 1}}))  # 0.1 format
    (runs / "old" / "recipe.yaml").write_text("name: old\nbase: demo\nnot: [valid")
    runner = FakeRunner()

    async def go():
        app = EdgetuneApp(runner=runner, chat_session=FakeChatSession, runs_dir=str(runs))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            assert screen.__class__.__name__ == "RunsScreen"
            table = screen.query_one("#runs")
            rows = {table.get_row_at(i)[0]: table.get_row_at(i) for i in range(table.row_count)}
            assert set(rows) == {"good", "broken", "half", "old"}
            assert rows["good"][3] == "done" and rows["good"][4] == "good-Q4_K_M.gguf"
            assert rows["good"][5] == "FAIL" and rows["good"][6] == "good"
            assert rows["broken"][3] == "failed" and rows["half"][3] == "incomplete" and rows["old"][3] == "unreadable"
            table.move_cursor(row=[r.name for r in screen.rows].index("good"))
            await pilot.pause()
            assert str(screen.query_one("#resume").label) == "Rerun"
            await pilot.press("o")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "ResultsScreen"
            assert "file verdict: FAIL" in str(app.screen.query_one("#accuracy").render())
            assert not done.report_html.exists()
            await pilot.click("#report")  # no report.html in this folder (an older run): built, then shown
            await wait_until(pilot, lambda: "report.html" in str(app.screen.query_one("#error").render()))  # off the UI thread
            assert done.report_html.is_file()
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("c")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "ChatScreen"
            chat = app.screen
            await wait_until(pilot, lambda: len(chat.sessions) == 1)
            assert chat.sessions[0].path == done.gguf("Q4_K_M") and chat.sessions[0].log == done.chat_log
            await type_and_send(pilot, chat, "hello")
            await wait_until(pilot, lambda: chat.sessions[0].sent and not chat.streaming)
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("c")  # the conversation comes back with the run
            await pilot.pause()
            chat = app.screen
            await wait_until(pilot, lambda: len(chat.sessions) == 1)
            assert any("hello" in t for t in lines(chat, ".msg-you"))
            assert [m["content"] for m in chat.sessions[0].messages] == ["hello", "good-Q4_K_M says: hello"]
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("r")
            await wait_until(pilot, lambda: app.screen.__class__.__name__ == "RunScreen" and app.screen.finished)
            assert runner.recipe.name == "good" and runner.recipe.runs_dir == str(runs)
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "RunsScreen"
            screen.query_one("#runs").move_cursor(row=[r.name for r in screen.rows].index("broken"))
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("n")  # no: kept
            await pilot.pause()
            assert (runs / "broken").is_dir()
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert not (runs / "broken").exists() and "broken" not in [r.name for r in screen.rows]
            await pilot.press("n")  # New run: the wizard; Escape on its first step comes back
            await pilot.pause()
            assert app.screen.__class__.__name__ == "BaseModelScreen"
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen
    asyncio.run(go())


def test_results_start_on_the_recommended_file_and_compare_it_with_f16(tmp_path):
    make_run(tmp_path / "runs", "my-run")  # the fake smoke table's paths: runs/my-run/gguf/my-run-*.gguf

    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession, runs_dir="runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("o")
            await pilot.pause()
            view = app.screen.query_one("ResultsView")
            assert view.selected() == "runs/my-run/gguf/my-run-Q4_K_M.gguf"  # the one file on disk
            await pilot.click("#folder")
            await pilot.pause()
            assert str(app.screen.query_one("#error").render()) == "output folder: runs/my-run/gguf/"
            await pilot.click("#compare")
            await pilot.pause()
            assert app.screen.initial == ("runs/my-run/gguf/my-run-F16.gguf", "runs/my-run/gguf/my-run-Q4_K_M.gguf")
    asyncio.run(go())


def test_runs_screen_with_no_runs_offers_a_new_run(tmp_path):
    async def go():
        app = EdgetuneApp(runner=FakeRunner(), runs_dir=str(tmp_path / "none"))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "no runs under" in str(app.screen.query_one("#detail").render())
            assert app.screen.query_one("#open").disabled
            await pilot.press("n")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "BaseModelScreen"
    asyncio.run(go())


def test_serve_is_never_started_twice_and_a_dead_server_is_shown_stopped(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "good")
    servers = FakeServers()

    async def go():
        app = EdgetuneApp(runner=FakeRunner(), runs_dir=str(runs), server_process=servers)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            screen = app.screen
            panel = screen.query_one("#serve-info")
            await pilot.press("s")
            await pilot.pause()
            assert "starting the server for good-Q4_K_M.gguf at http://127.0.0.1:8000/v1" in str(panel.render())
            await pilot.press("s")  # pressed again while it starts: no second server
            await pilot.pause()
            assert "already starting" in str(panel.render()) and len(servers.made) == 1
            servers.ready_now.set()
            await wait_until(pilot, lambda: "OpenAI-compatible API at http://127.0.0.1:8000/v1" in str(panel.render()))
            await pilot.press("s")  # pressed while it runs: says where, asks before stopping
            await pilot.pause()
            assert app.screen.__class__.__name__ == "ConfirmScreen"
            assert "Already serving good-Q4_K_M.gguf at http://127.0.0.1:8000/v1" in str(app.screen.question)
            await pilot.press("n")
            await pilot.pause()
            assert app.screen is screen and len(servers.made) == 1 and not servers.made[0].stopping
            servers.made[0].returncode = -9  # killed behind the TUI's back
            await wait_until(pilot, lambda: "stopped (killed by SIGKILL" in str(panel.render()))
            assert "OpenAI-compatible API" not in str(panel.render()) and panel.has_class("error")
            await pilot.press("o")  # another screen shows it stopped too, not running
            await pilot.pause()
            assert "stopped (killed by SIGKILL" in str(app.screen.query_one("#serve-info").render())
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("s")  # a dead server is replaced by a new one
            await wait_until(pilot, lambda: "OpenAI-compatible API at http://127.0.0.1:8001/v1" in str(panel.render()))
            assert len(servers.made) == 2
            await pilot.press("s")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert servers.made[1].stopping and "stopped serving good-Q4_K_M.gguf" in str(panel.render())
            assert "good-Q4_K_M" not in "".join(app.servers)
    asyncio.run(go())


def test_a_streaming_reply_is_redrawn_per_frame_not_per_token_and_lays_out_only_when_it_outgrows_its_room(monkeypatch):
    from edgetune.tui.screens import chat as chat_screen
    from edgetune.tui.widgets import transcript

    redraws = []
    show_reply = transcript.Transcript.show_reply
    monkeypatch.setattr(transcript.Transcript, "show_reply",
                        lambda self, line, text, stats="", done=False: (redraws.append(done),
                                                                        show_reply(self, line, text, stats, done)))
    monkeypatch.setattr(chat_screen, "FRAME_S", 3600.0)  # one frame for the whole reply

    async def go():
        app = EdgetuneApp(runner=FakeRunner(), chat_session=FakeChatSession)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await open_chat(app, pilot)
            words = " ".join(f"w{i}" for i in range(60))
            await type_and_send(pilot, chat, words)
            await wait_until(pilot, lambda: chat.sessions[0].sent and not chat.streaming)
            assert redraws == [False, True]  # 62 tokens: the first piece at once, then the whole reply at its end
            assert chat.replies[0] == f"m says: {words}"
            reply = chat.reply_lines[0]
            assert reply.styles.min_height is None  # the headroom goes with the end of the reply
            t = chat.query_one("#t0")
            line = t.add("model:")
            await pilot.pause()
            t.show_reply(line, "one\ntwo")  # a second line: laid out, with room below the text
            await pilot.pause()
            await wait_until(pilot, lambda: not line._layout_required)  # the layout above is done (a busy box lags)
            room = line.size.height
            assert room == 2 + transcript.HEADROOM
            t.show_reply(line, "one\ntwo\nthree")  # fits: the line alone is redrawn, nothing laid out
            assert not line._layout_required and "three" in str(line.render())
            await pilot.pause()
            assert line.size.height == room
            t.show_reply(line, "\n".join(["x"] * (room + 1)))  # outgrows it: laid out, more room
            await pilot.pause()
            assert line.size.height == room + 1 + transcript.HEADROOM
            t.show_reply(line, "done", "1 tokens", done=True)
            await pilot.pause()
            assert line.size.height == 2
    asyncio.run(go())
