"""Threads for heavy steps (edgetune.threads): chosen from the CPUs that are free, with a reason; the
CPUs, the cgroup quota and the load are faked here, so these tests say the same on any machine."""
import shutil
from pathlib import Path

import gguf
import pytest
from typer.testing import CliRunner

from edgetune import threads
from edgetune.errors import EdgetuneError
from edgetune.inputs.recipe import from_dict

from conftest import make_recipe


@pytest.fixture
def two_cpus(monkeypatch):
    """A 2-core machine with no quota; the load is whatever `machine["busy"]` says (in CPUs)."""
    machine = {"busy": 0.0}
    monkeypatch.setattr(threads, "affinity", lambda: {0, 1})
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: len(cpus))
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus: machine["busy"])
    return machine


# ---------------------------------------------------------------- the choice and its reason

def test_idle_machine_takes_every_cpu(two_cpus):
    c = threads.choose()
    assert c.threads == 2 and c.busy == 0 and c.busy_line == ""
    assert c.reason == "2 CPUs free: using 2 threads"


def test_one_busy_cpu_leaves_one_thread_and_says_so(two_cpus):
    two_cpus["busy"] = 0.97  # a busy loop reads a little under 1
    c = threads.choose()
    assert c.threads == 1 and c.busy == 1
    assert c.busy_line == "1 of 2 CPUs busy: expect about half the speed"
    assert c.reason == "1 of 2 CPUs busy: expect about half the speed; using 1 thread"


def test_every_cpu_busy_still_runs_on_one_thread(two_cpus):
    two_cpus["busy"] = 2.0
    c = threads.choose()
    assert c.threads == 1 and c.reason.startswith("2 of 2 CPUs busy: expect about a third of the speed")


def test_background_noise_is_not_a_busy_cpu(two_cpus):
    two_cpus["busy"] = 0.3  # an editor, a shell, the kernel's own work
    assert threads.choose().threads == 2


def test_the_tui_keeps_one_cpu(two_cpus):
    c = threads.choose(ui=True)
    assert c.threads == 1 and c.reserved == 1 and "one CPU left to the TUI" in c.reason and not c.busy
    with threads.for_ui():  # the TUI's workers run the pipeline inside this
        assert threads.choose().threads == 1
    assert threads.choose().threads == 2
    two_cpus["busy"] = 1.0  # one CPU left: nothing to spare for the TUI
    c = threads.choose(ui=True)
    assert c.threads == 1 and c.reserved == 0 and "left to the TUI" not in c.reason


def test_an_override_wins_and_warns_when_it_outnumbers_the_free_cpus(two_cpus):
    c = threads.choose(4, "threads: 4")
    assert c.threads == 4 and c.reason == "4 threads (set by threads: 4)"
    two_cpus["busy"] = 1.0
    c = threads.choose(2, "--threads 2", ui=True)
    assert c.threads == 2 and "set by --threads 2" in c.reason and "more threads than free CPUs" in c.reason
    assert c.reason.startswith("1 of 2 CPUs busy")


def test_quota_and_physical_cores_bound_the_count(monkeypatch, two_cpus):
    monkeypatch.setattr(threads, "affinity", lambda: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "physical_cores", lambda cpus: 4)  # hyper-threads: 2 per core
    assert threads.choose().threads == 4
    monkeypatch.setattr(threads, "cpu_quota", lambda: 2)
    c = threads.choose()
    assert c.threads == 2 and c.usable == 2 and c.reason == "2 CPUs free: using 2 threads"


def test_recipe_threads_and_smoke_threads(two_cpus):
    r = from_dict({"threads": 3})
    assert threads.for_recipe(r).threads == 3 and "threads: 3" in threads.for_recipe(r).reason
    r = from_dict({"threads": 3, "smoke": {"threads": 1}})
    assert threads.for_recipe(r, measurements=True).threads == 1 and threads.for_recipe(r).threads == 3
    assert threads.for_recipe(from_dict({})).threads == 2
    assert threads.resolve(5) == 5 and threads.resolve(0) == 2


# ---------------------------------------------------------------- what the machine says

def test_cgroup_v2_quota_of_the_cgroup_and_its_parents(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "cgroup"
    (root / "user" / "job").mkdir(parents=True)
    proc.write_text("0::/user/job\n")
    assert threads.cpu_quota(root, proc) is None  # no cpu.max files: no quota
    (root / "user" / "job" / "cpu.max").write_text("max 100000\n")
    assert threads.cpu_quota(root, proc) is None
    (root / "user" / "job" / "cpu.max").write_text("250000 100000\n")
    assert threads.cpu_quota(root, proc) == 2  # 2.5 CPUs: 2 whole ones
    (root / "user" / "cpu.max").write_text("150000 100000\n")
    assert threads.cpu_quota(root, proc) == 1  # a parent's tighter limit applies
    (root / "user" / "cpu.max").write_text("50000 100000\n")
    assert threads.cpu_quota(root, proc) == 1  # never below one
    (root / "user" / "cpu.max").write_text("garbage\n")
    assert threads.cpu_quota(root, proc) == 2


def test_cgroup_v1_quota(tmp_path):
    root, proc = tmp_path / "cg", tmp_path / "cgroup"
    job = root / "cpu,cpuacct" / "docker" / "abc"
    job.mkdir(parents=True)
    proc.write_text("5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    (job / "cpu.cfs_quota_us").write_text("-1\n")
    (job / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cpu_quota(root, proc) is None
    (job / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cpu_quota(root, proc) == 3
    # inside a container the controller's root is the container's own cgroup
    shutil.rmtree(root / "cpu,cpuacct" / "docker")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cpu_quota(root, proc) == 1
    assert threads.cpu_quota(root, tmp_path / "missing") is None


def test_proc_stat_ticks_of_the_allowed_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  300 0 100 600 0 0 0 0 0 0\n"
                    "cpu0 100 0 50 300 10 0 0 0 0 0\n"  # busy 150, iowait counts as idle
                    "cpu1 200 0 50 300 0 0 0 0 0 0\n"
                    "intr 12345\n")
    assert threads.cpu_ticks([0], stat) == (150, 460)
    assert threads.cpu_ticks([0, 1], stat) == (400, 1010)
    assert threads.cpu_ticks([0], tmp_path / "missing") is None


def test_busy_cpus_leaves_out_this_process(monkeypatch):
    # 2 CPUs over one second: 150 of 200 ticks busy = 1.5 CPUs, of which this process used 0.5
    ticks = iter([(1000, 10000), (1150, 10200)])
    own = iter([3.0, 3.5])
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(threads, "cpu_ticks", lambda cpus, stat: next(ticks))
    monkeypatch.setattr(threads, "_own_seconds", lambda: next(own))
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.busy_cpus([0, 1]) == pytest.approx(1.0)
    # unreadable /proc/stat: nothing known to be busy
    monkeypatch.setattr(threads, "cpu_ticks", lambda cpus, stat: None)
    monkeypatch.setattr(threads.time, "monotonic", lambda: 0.0)
    monkeypatch.setattr(threads, "_own_seconds", lambda: 0.0)
    assert threads.busy_cpus([0, 1]) == 0.0


def test_busy_cpus_sees_a_busy_child(tmp_path):
    """The real sampler: a busy-loop child reads as about one CPU more than without it (not a timing
    assertion: only that the other process is counted and this one is not)."""
    import subprocess
    import sys
    cpus = sorted(threads.affinity())
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time
        time.sleep(0.3)
        assert threads.busy_cpus(cpus, seconds=0.5) >= 0.5
    finally:
        child.kill()
        child.wait()


def test_physical_cores_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("\n\n".join(f"processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {p % 2}" for p in range(4)) + "\n")
    assert threads.physical_cores({0, 1, 2, 3}, info) == 2  # 4 hyper-threads on 2 cores
    assert threads.physical_cores({0, 2}, info) == 1  # siblings
    assert threads.physical_cores({0, 1}, tmp_path / "missing") == 2


# ---------------------------------------------------------------- the recipe key

def test_recipe_threads_keys_are_validated():
    assert from_dict({}).threads == 0 and from_dict({"threads": 2}).threads == 2
    assert from_dict({"smoke": {"threads": 1}}).smoke.threads == 1  # the older key still works
    with pytest.raises(EdgetuneError, match="threads -1 must be >= 0"):
        from_dict({"threads": -1})
    with pytest.raises(EdgetuneError, match="smoke.threads -2 must be >= 0"):
        from_dict({"smoke": {"threads": -2}})
    with pytest.raises(EdgetuneError, match="threads: expected a whole number"):
        from_dict({"threads": "many"})
    r = from_dict({"threads": 3})
    assert from_dict(__import__("yaml").safe_load(r.to_yaml())).threads == 3


# ---------------------------------------------------------------- every heavy step takes the choice

def tiny_gguf(path: Path) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class FakeLlama:
    made: list[dict] = []

    def __init__(self, **kwargs):
        FakeLlama.made.append(kwargs)
        self.metadata = {}
        self._model = type("Model", (), {"vocab": None})()  # what ChatSession's token count wraps

    def sample(self, *args, **kwargs):
        return 0

    def close(self):
        pass


@pytest.fixture
def fake_llama(monkeypatch):
    import llama_cpp
    FakeLlama.made = []
    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    return FakeLlama.made


def test_chat_session_takes_the_chosen_threads(two_cpus, fake_llama, tmp_path):
    from edgetune.use.chat import ChatSession
    path = tiny_gguf(tmp_path / "m.gguf")
    two_cpus["busy"] = 1.0
    s = ChatSession(path)
    assert fake_llama[-1]["n_threads"] == 1 and fake_llama[-1]["n_threads_batch"] == 1
    assert s.threads.reason == "1 of 2 CPUs busy: expect about half the speed; using 1 thread"
    two_cpus["busy"] = 0.0
    ChatSession(path)
    assert fake_llama[-1]["n_threads"] == 2
    ChatSession(path, threads=3)
    assert fake_llama[-1]["n_threads"] == 3
    with threads.for_ui():  # the TUI's chat
        ChatSession(path)
    assert fake_llama[-1]["n_threads"] == 1


def test_tui_runs_leave_a_cpu_and_chat_takes_the_free_ones(two_cpus, monkeypatch, fake_llama, tmp_path):
    from edgetune.tui import app as app_mod
    seen = []
    monkeypatch.setattr(app_mod.pipeline, "run", lambda r, e, c: seen.append(threads.choose().threads))
    app_mod.default_runner(None, None, None)
    assert seen == [1]
    app_mod.default_chat_session(str(tiny_gguf(tmp_path / "m.gguf")))  # its redraws are batched: no CPU kept
    assert fake_llama[-1]["n_threads"] == 2
    two_cpus["busy"] = 1.0
    app_mod.default_chat_session(str(tiny_gguf(tmp_path / "m.gguf")))  # still none taken from a busy machine
    assert fake_llama[-1]["n_threads"] == 1
    app_mod.default_chat_session(str(tiny_gguf(tmp_path / "m.gguf")), thread_count=2)
    assert fake_llama[-1]["n_threads"] == 2
    assert threads.choose().threads == 1


def test_cli_chat_threads_option_and_reason(two_cpus, monkeypatch, tmp_path):
    from edgetune import chat as chat_mod
    from edgetune import cli
    made = []

    class Session:
        template_name, last_stats = "none", ""

        def __init__(self, gguf, system="", threads=0):
            made.append(threads)

        def close(self):
            pass

    monkeypatch.setattr(chat_mod, "ChatSession", Session)
    monkeypatch.setattr(cli, "_log_libraries", lambda *a, **k: None)
    two_cpus["busy"] = 1.0
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # the session is a fake; the file must exist
    out = CliRunner().invoke(cli.app, ["chat", str(tmp_path / "m.gguf")], input="")
    assert out.exit_code == 0 and made == [1]
    assert "1 of 2 CPUs busy: expect about half the speed; using 1 thread" in out.output
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # the session is a fake; the file must exist
    out = CliRunner().invoke(cli.app, ["chat", str(tmp_path / "m.gguf"), "--threads", "2"], input="")
    assert made[-1] == 2 and "set by --threads 2" in out.output


def test_cli_threads_option_sets_the_recipe_key(monkeypatch):
    from edgetune import cli
    got = []
    monkeypatch.setattr(cli, "_run_pipeline", lambda r, until, force: got.append(r.threads))
    monkeypatch.setattr(cli.hub, "check_ids", lambda **k: None)
    monkeypatch.setattr(cli.pipeline, "check_inputs", lambda r, render: None)
    assert CliRunner().invoke(cli.app, ["run", "--threads", "1"]).exit_code == 0
    assert CliRunner().invoke(cli.app, ["run"]).exit_code == 0
    assert got == [1, 0]


def test_llama_cpp_measurements_take_the_chosen_threads(two_cpus, fake_llama, tmp_path):
    from edgetune import gguf_eval
    path = tiny_gguf(tmp_path / "m.gguf")
    two_cpus["busy"] = 1.0
    gguf_eval.load(path, 64)  # every file the quantize and smoke steps measure is loaded here
    assert fake_llama[-1]["n_threads"] == 1
    gguf_eval.load(path, 64, 2)
    assert fake_llama[-1]["n_threads"] == 2


def test_training_sets_torch_threads_and_logs_why(two_cpus, monkeypatch):
    import torch
    from transformers import LlamaConfig

    from edgetune import train
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    events = []
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=100)
    try:
        two_cpus["busy"] = 1.0
        train.machine_setup(train.Plan("lora", "cpu", "fp32"), train.TrainSpec(), config, 32, events.append)
        assert torch.get_num_threads() == 1
        line = [e.message for e in events if e.data.get("threads")][0]
        assert line == "threads: 1 of 2 CPUs busy: expect about half the speed; using 1 thread"
        train.machine_setup(train.Plan("lora", "cpu", "fp32"), train.TrainSpec(), config, 32, events.append, threads=2)
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        train.machine_setup(train.Plan("lora", "cpu", "fp32"), train.TrainSpec(), config, 32, events.append)
        assert torch.get_num_threads() == 1 and "set by OMP_NUM_THREADS" in events[-2].message
    finally:
        torch.set_num_threads(before)


def test_quantize_and_smoke_steps_take_the_chosen_threads(two_cpus, monkeypatch, tiny_base, demo_jsonl, trained_run,
                                                          tmp_path):
    """A real run of the tiny model from its trained adapter: the quantize step (importance matrix, KL
    measurements) and the smoke test run llama.cpp and torch on the chosen threads and log why."""
    import llama_cpp
    import torch

    from edgetune import pipeline
    r, run_dir = trained_run
    shutil.copytree(run_dir, tmp_path / "runs" / r.name)
    r = make_recipe(tiny_base, demo_jsonl, tmp_path / "runs", export={"quants": ["Q8_0"]})
    real, made, torch_threads = llama_cpp.Llama, [], []

    def spy(*args, **kwargs):
        if not kwargs.get("vocab_only"):  # a vocabulary alone (which tokens end generation) computes nothing
            made.append(kwargs.get("n_threads"))
        return real(*args, **kwargs)
    real_set = torch.set_num_threads
    monkeypatch.setattr(llama_cpp, "Llama", spy)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (torch_threads.append(n), real_set(n)))
    before = torch.get_num_threads()
    two_cpus["busy"] = 1.0
    events = []
    try:
        pipeline.run(r, events.append)
    finally:
        real_set(before)
    logged = {e.phase: e.message for e in events if e.kind == "log" and "threads" in e.data}
    assert logged["quantize"] == logged["smoke"] == "threads: 1 of 2 CPUs busy: expect about half the speed; using 1 thread"
    assert made and set(made) == {1}, made
    assert torch_threads and set(torch_threads) == {1}


# ---------------------------------------------------------------- the wizard's Training step

@pytest.mark.parametrize("busy", [1.0, 0.0])
def test_training_step_warns_when_the_machine_is_busy(two_cpus, monkeypatch, busy):
    import asyncio

    from edgetune.device import Estimate
    from edgetune.tui.app import EdgetuneApp

    from tui_fixtures import FakeRunner
    two_cpus["busy"] = busy
    monkeypatch.setattr("edgetune.tui.screens.training.estimate", lambda recipe, stats: Estimate(
        "cpu", "fp32", "fp32", "1 thread", 100.0, 5e6, 512, 8))

    async def go():
        app = EdgetuneApp(runner=FakeRunner())
        async with app.run_test(size=(80, 24)) as pilot:
            from edgetune.tui.screens.training import TrainingScreen
            await app.push_screen(TrainingScreen())
            screen = app.screen
            for _ in range(400):  # the load is checked in a worker
                if not screen.workers or all(w.is_finished for w in screen.workers):
                    break
                await pilot.pause(0.05)
            await pilot.pause()
            line = screen.query_one("#busy")
            if busy:
                assert line.display and "1 of 2 CPUs busy: expect about half the speed; using 1 thread" in str(line.render())
            else:
                assert not line.display
    asyncio.run(go())
