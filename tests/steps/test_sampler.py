"""Length-bucketed batches in random order: little padding, yet every step sees rows of every length."""
import random

import pytest

from edgetune.steps.train.sampler import LengthBucketSampler, padding_share


def skewed_lengths(n=1000, seed=1):
    rng = random.Random(seed)  # instruction data: many short rows, a long tail
    return [min(250, 40 + int(rng.expovariate(1 / 45))) for _ in range(n)]


def ks_statistic(a, b):
    """Largest gap between the two empirical length distributions (two-sample Kolmogorov-Smirnov)."""
    a, b = sorted(a), sorted(b)
    gap = 0.0
    for x in set(a) | set(b):
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        gap = max(gap, abs(fa - fb))
    return gap


def first_rows(batches, n_batches):
    return [i for b in batches[:n_batches] for i in b]


def test_first_batches_have_the_datasets_length_distribution():
    """The first steps of a run see rows of every length: over 30 seeds, the lengths of the first 8 batches
    (one draw per batch: rows of a batch are alike) follow the dataset's length distribution."""
    lengths = skewed_lengths()
    early = [lengths[b[0]] for seed in range(30) for b in LengthBucketSampler(lengths, 8, seed=seed).batches()[:8]]
    mean = sum(lengths) / len(lengths)
    assert abs(sum(early) / len(early) - mean) < 0.1 * mean
    # 240 independent draws give a KS statistic below ~0.105 (99%); a long-to-short walk gives ~0.9.
    assert ks_statistic(early, lengths) < 0.11


def test_padding_far_below_random_batches():
    lengths = skewed_lengths()
    batches = LengthBucketSampler(lengths, 8, seed=0).batches()
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    random_batches = [order[i:i + 8] for i in range(0, len(order), 8)]
    assert padding_share(lengths, batches) < 0.2 * padding_share(lengths, random_batches)


def test_every_row_once_per_epoch_and_short_batch_last():
    lengths = skewed_lengths(1003)
    s = LengthBucketSampler(lengths, 8, seed=3)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        batches = s.batches()
        assert sorted(first_rows(batches, len(batches))) == list(range(1003))
        assert [len(b) for b in batches] == [8] * 125 + [3]
        assert list(s) == first_rows(batches, len(batches))  # the index stream is the batches, in order
    assert len(s) == 1003


def test_order_is_set_by_seed_and_epoch_only():
    lengths = skewed_lengths()
    a, b, c = (LengthBucketSampler(lengths, 8, seed=s) for s in (0, 0, 1))
    assert a.batches() == b.batches() and a.batches() != c.batches()
    a.set_epoch(1)
    assert a.batches() != b.batches()
    b.set_epoch(1)
    assert a.batches() == b.batches()


def test_two_processes_get_disjoint_batches_of_one_order():
    """accelerate shards the trainer's DataLoader: rank r takes batches r, r + 2, ... of the same order."""
    import torch
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    lengths = skewed_lengths(400)
    seen = []
    for rank in (0, 1):
        sampler = LengthBucketSampler(lengths, 8, seed=0)
        loader = prepare_data_loader(DataLoader(list(range(400)), batch_size=8, sampler=sampler),
                                     num_processes=2, process_index=rank, put_on_device=False)
        loader.set_epoch(1)
        seen.append([b.tolist() for b in loader])
    order = LengthBucketSampler(lengths, 8, seed=0)
    order.set_epoch(1)
    expected = order.batches()
    assert seen[0] == expected[0::2] and seen[1] == expected[1::2]
    assert not set(map(tuple, seen[0])) & set(map(tuple, seen[1]))
    assert isinstance(seen[0][0][0], int) and torch.is_tensor(next(iter(loader)))


def test_bad_batch_size():
    with pytest.raises(ValueError):
        LengthBucketSampler([1, 2], 0)


def load_bench(name):
    """scripts/bench/<name>.py as a module: tests share its data and seed recipe rather than copy them."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "scripts" / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_batches(monkeypatch):
    """Patch the trainer's training step to note (step, rows of the micro-batch without padding)."""
    import trl
    seen = []
    step = trl.SFTTrainer.training_step

    def recording_step(self, model, inputs, *args, **kwargs):
        rows = tuple(tuple(ids[m.bool()].tolist()) for ids, m in zip(inputs["input_ids"], inputs["attention_mask"]))
        seen.append((self.state.global_step, rows))
        return step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "training_step", recording_step)
    return seen


def test_training_mixes_lengths_from_the_start_and_resumes_on_the_same_batches(tiny_base, tmp_path, monkeypatch):
    from edgetune import train
    from edgetune.events import Cancelled, CancelToken
    from edgetune.runs import RunFolder

    from conftest import make_recipe

    data = load_bench("train").make_data(tmp_path / "varied.jsonl", 160)  # 1 to 40 words of context per row
    settings = {"max_steps": 24, "batch_size": 8, "save_steps": 100, "eval_steps": 100, "logging_steps": 1}
    full = make_recipe(tiny_base, data, tmp_path / "a", data={"max_length": 128}, train=settings)
    seen = record_batches(monkeypatch)
    train.train(full, RunFolder.of(full).dir)
    uninterrupted = dict(seen)
    assert len(uninterrupted) == 24  # 144 train rows / 8 = 18 batches: the run crosses into a second epoch

    lengths = sorted(len(r) for _, rows in seen[:18] for r in rows)
    median = lengths[len(lengths) // 2]
    first = [max(len(r) for r in rows) for _, rows in seen[:6]]
    assert min(first) < median < max(first), f"first 6 batches' lengths {first}, median row {median}"
    padded = sum(len(rows) * max(map(len, rows)) for _, rows in seen[:18])
    assert 1 - sum(lengths) / padded < 0.1  # batches of near-equal lengths

    cancel = CancelToken()

    def stop_after_step_20(e):
        if e.phase == "train" and e.step is not None and e.step >= 20:
            cancel.cancel()

    resumed = make_recipe(tiny_base, data, tmp_path / "b", data={"max_length": 128}, train=settings)
    with pytest.raises(Cancelled):
        train.train(resumed, RunFolder.of(resumed).dir, stop_after_step_20, cancel)
    seen.clear()
    train.train(resumed, RunFolder.of(resumed).dir)
    after = dict(seen)
    assert after and min(after) > 18 and max(after) == 23  # resumed inside the second epoch
    assert all(after[step] == uninterrupted[step] for step in after)
