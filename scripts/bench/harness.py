"""What every benchmark shares: run a measured command in a child process, read its wall time and
peak RSS, and print ratios against a baseline measured in the same run.

    from scripts.bench.harness import Child, child, ratio_line

Benchmarks are run as modules from the repository root (`.venv/bin/python -m scripts.bench.export`),
so they import each other and edgetune without touching sys.path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

MARK = "BENCH "  # a child prints one line `BENCH {json}` with what it measured


@dataclass
class Child:
    seconds: float  # wall time of the whole child
    peak_rss_mib: float  # the child's own peak resident memory (wait4's ru_maxrss: it does not carry over)
    returncode: int
    report: dict = field(default_factory=dict)  # the child's `BENCH {...}` line
    output: str = ""


def child(args: list[str], env: dict | None = None, check: bool = True, cwd: str | None = None) -> Child:
    """Run `args` (a python -m / -c command or any program), its output captured."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if check and proc.returncode != 0:
        sys.stderr.write(out[-4000:])
        raise SystemExit(f"benchmark child failed (rc {proc.returncode}): {' '.join(args)}")
    report = {}
    for line in out.splitlines():
        if line.startswith(MARK):
            report = json.loads(line[len(MARK):])
    return Child(seconds, usage.ru_maxrss / 1024, proc.returncode, report, out)


def python(module_or_code: str, *args: str, env: dict | None = None) -> Child:
    """This interpreter on a module (`-m scripts.bench.x`) when the name has no spaces, else on code."""
    flag = "-m" if " " not in module_or_code and "\n" not in module_or_code else "-c"
    return child([sys.executable, flag, module_or_code, *args], env=env)


def peak_rss_mib() -> float:
    """This process's own peak resident memory so far (VmHWM)."""
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) / 1024


def emit(**measured) -> None:
    """In a child: report what it measured to the parent."""
    print(MARK + json.dumps(measured), flush=True)


def ratio_line(what: str, ours: float, baseline: float, unit: str = "x") -> str:
    ratio = ours / baseline if baseline else float("inf")
    return f"ratio {what}: {ratio:.2f}{unit}"
