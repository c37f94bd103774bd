"""Two training processes over gloo on the CPU: the same launcher accelerate uses for multi-GPU."""
import json
import os
import subprocess
import sys

from conftest import make_recipe


def test_two_ranks_agree_on_the_loss(tiny_base, demo_jsonl, tmp_path):
    r = make_recipe(tiny_base, demo_jsonl, tmp_path / "runs",
                    train={"max_steps": 4, "logging_steps": 1, "save_steps": 10, "eval_steps": 10})
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(r.to_yaml())
    import socket
    with socket.socket() as sock:  # a free port, so a previous run's socket cannot be in the way
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
         "-m", "edgetune", "train", "--recipe", str(recipe_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    run = tmp_path / "runs" / "t"
    rank0 = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    rank1 = [json.loads(x) for x in (run / "train_log.rank1.jsonl").read_text().splitlines()]
    losses0 = [x["loss"] for x in rank0 if "loss" in x]
    losses1 = [x["loss"] for x in rank1 if "loss" in x]
    assert len(losses0) == 4 and losses0 == losses1
    # Each rank saw half the data: 4 steps covered twice the epochs a single process would.
    assert rank0[-1]["epoch"] > 0 and (run / "adapter" / "adapter_model.safetensors").is_file()
