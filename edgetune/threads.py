"""Threads for a heavy step: as many as there are CPUs free, never more.

llama.cpp's and torch's worker threads meet at a barrier after every operation. When another process
holds one of the CPUs, the thread that shares it runs only now and then, and every barrier waits for
it: on the 2-core VM, with one busy loop beside it, chat on 2 threads fell from 583 to 55 tokens/s
(0.09x) and training Gemma 3 270M to 0.08x, where 1 thread keeps about half the idle speed. So every
heavy step (training, importance matrix, quantize measurements, smoke test, chat) asks `choose()`:
the CPUs this process may use (its affinity, one per physical core, a cgroup CPU quota), less those
other processes keep busy (/proc/stat sampled for a moment, this process's own time taken out), less
one for the TUI when the TUI runs the work. The step logs the reason ("1 of 2 CPUs busy: expect about
half the speed; using 1 thread"). `--threads` / the recipe's `threads` key overrides the count.

/proc/stat rather than the load average: the 1-minute load average still reads 1 a minute after a
competing process has stopped (and rises as slowly when one starts), so a step that starts just after
would take 1 thread on an idle machine; a short sample sees the machine as it is now.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from edgetune.events import Callback, Event

CGROUP_ROOT = Path("/sys/fs/cgroup")
SAMPLE_SECONDS = 0.3  # /proc/stat ticks 100 times a second: ~30 ticks per CPU, enough to tell 1 from 0
_UI: ContextVar[bool] = ContextVar("edgetune_threads_ui", default=False)


@contextmanager
def for_ui():
    """Work started inside (by the TUI, on its worker thread) leaves one CPU to the TUI itself."""
    token = _UI.set(True)
    try:
        yield
    finally:
        _UI.reset(token)


@dataclass(frozen=True)
class Choice:
    """The thread count of one step and why."""

    threads: int
    usable: int  # CPUs this process may use (affinity, physical cores, cgroup quota)
    busy: int  # of them, kept busy by other processes
    reserved: int = 0  # left to the TUI
    override: str = ""  # what set the count, when not chosen here

    @property
    def busy_line(self) -> str:
        """'1 of 2 CPUs busy: expect about half the speed', or '' on a machine with nothing else running."""
        if not self.busy:
            return ""
        return f"{min(self.busy, self.usable)} of {self.usable} CPUs busy: expect {speed_words(self.speed)}"

    @property
    def speed(self) -> float:
        """Expected share of the speed on an idle machine: the CPU time our threads get (a fair share
        where they and the busy CPUs outnumber the usable ones) over all usable CPUs."""
        t, u, b = self.threads, self.usable, self.busy
        got = t if t + b <= u else t * u / (t + b)
        return min(1.0, got / u)

    @property
    def reason(self) -> str:
        n = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.override:
            why = f"{n} ({self.override})"
            if self.busy and self.threads > max(1, self.usable - self.busy):
                why += "; more threads than free CPUs: llama.cpp and torch can run 10x slower so"
        elif self.busy:
            why = f"using {n}"
        else:
            why = f"{self.usable} CPU{'s' if self.usable != 1 else ''} free: using {n}"
        if self.reserved and not self.override:
            why += ", one CPU left to the TUI"
        return f"{self.busy_line}; {why}" if self.busy else why


def speed_words(share: float) -> str:
    for value, words in ((1, "the full speed"), (3 / 4, "three quarters of the speed"),
                         (2 / 3, "two thirds of the speed"), (1 / 2, "about half the speed"),
                         (1 / 3, "about a third of the speed"), (1 / 4, "about a quarter of the speed")):
        if abs(share - value) < 0.04:
            return words
    return f"about {share:.0%} of the speed"


def choose(override: int = 0, source: str = "threads setting", ui: bool | None = None,
           busy: float | None = None) -> Choice:
    """The thread count for a heavy step. `override` > 0 wins (`source` names it in the reason).
    `ui`: leave one CPU to the TUI (default: whether the work runs inside `for_ui()`). `busy`: other
    processes' load in CPUs (default: sampled now)."""
    cpus = sorted(affinity())
    usable = max(1, min(physical_cores(cpus), cpu_quota() or len(cpus)))
    load = busy_cpus(cpus) if busy is None else busy
    n_busy = min(len(cpus), int(math.floor(load + 0.5)))  # one process at 100% reads 0.95-1.0
    free = max(1, min(usable, len(cpus) - n_busy))
    reserve = 1 if (_UI.get() if ui is None else ui) and free > 1 else 0
    # the busy count as the user sees it: of the CPUs we may use
    shown_busy = min(usable, n_busy)
    if override > 0:
        return Choice(override, usable, shown_busy, 0, f"set by {source}")
    return Choice(free - reserve, usable, shown_busy, reserve)


def for_recipe(recipe, measurements: bool = False) -> Choice:
    """The choice for a step of `recipe`: its `threads` key when set (for llama.cpp's measurements,
    `smoke.threads` first), else chosen now."""
    if measurements and recipe.smoke.threads:
        return choose(recipe.smoke.threads, f"smoke.threads: {recipe.smoke.threads}")
    return choose(recipe.threads, f"threads: {recipe.threads}")


def resolve(threads: int) -> int:
    """`threads` when set, else the count chosen now (for callers that pass 0)."""
    return threads if threads > 0 else choose().threads


def log_choice(phase: str, choice: Choice, on_event: Callback, what: str = "") -> int:
    """Say in the step's log what it chose and why; returns the thread count."""
    on_event(Event(phase, "log", f"{what}{': ' if what else ''}{choice.reason}",
                   data={"threads": choice.threads, "busy_cpus": choice.busy, "usable_cpus": choice.usable}))
    return choice.threads


def set_torch_threads(n: int) -> None:
    """torch's intra-op pool to `n` threads; its inter-op pool too while it can still be set (torch
    refuses once inter-op work has started)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass


# ---------------------------------------------------------------- what this process may use

def affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int] | set[int], cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """Distinct (package, core) pairs among `cpus`: hyper-threads share one core's matmul units, so
    the libraries gain nothing from them and lose to contention. Without cpuinfo: len(cpus)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return max(1, len(cpus))
    cores, proc, package, allowed = set(), None, "0", set(cpus)
    for block in text.split("\n\n"):
        proc, package, core = None, "0", None
        for line in block.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "processor":
                proc = int(value)
            elif key == "physical id":
                package = value
            elif key == "core id":
                core = value
        if proc in allowed:
            cores.add((package, core if core is not None else f"cpu{proc}"))
    return max(1, len(cores) or len(allowed))


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Whole CPUs the cgroup CPU quota allows (at least 1), or None without a quota. cgroup v2:
    cpu.max ("max 100000" or "150000 100000") of this cgroup and of every parent; v1: the cpu
    controller's cpu.cfs_quota_us / cpu.cfs_period_us (-1: none)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        rel = path.strip("/")
        if controllers == "":  # v2: limits of every ancestor apply
            parts = rel.split("/") if rel else []
            for i in range(len(parts), -1, -1):
                quotas.append(_quota_v2(root.joinpath(*parts[:i], "cpu.max")))
        elif "cpu" in controllers.split(","):
            mount = root / controllers
            if not mount.is_dir():
                mount = root / "cpu"
            for d in (mount / rel, mount) if rel else (mount,):
                if (d / "cpu.cfs_quota_us").is_file():
                    quotas.append(_quota_v1(d))
                    break
    quotas = [q for q in quotas if q]
    return max(1, int(min(quotas) + 1e-6)) if quotas else None


def _quota_v2(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _quota_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


# ---------------------------------------------------------------- how busy they are

def cpu_ticks(cpus, stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, total) clock ticks of `cpus` since boot; None when /proc/stat is unreadable."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    wanted, busy, total = {f"cpu{c}" for c in cpus}, 0, 0
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
            counted = values[:8]
            total += sum(counted)
            busy += sum(counted) - counted[3] - (counted[4] if len(counted) > 4 else 0)
    return (busy, total) if total else None


def busy_cpus(cpus, seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")) -> float:
    """How many of `cpus` other processes keep busy, in CPUs, over the next `seconds` (this
    process's own threads are not counted). 0 when it cannot be read."""
    before, own0, t0 = cpu_ticks(cpus, stat), _own_seconds(), time.monotonic()
    time.sleep(seconds)
    after, own1, t1 = cpu_ticks(cpus, stat), _own_seconds(), time.monotonic()
    if before is None or after is None or after[1] <= before[1]:
        return 0.0
    share = (after[0] - before[0]) / (after[1] - before[1])  # of all CPU time of `cpus` in the window
    return max(0.0, share * len(cpus) - (own1 - own0) / max(t1 - t0, 1e-6))


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system
