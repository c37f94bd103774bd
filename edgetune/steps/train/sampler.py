"""Batches of similar length in random order: little padding, no length curriculum.

transformers' `group_by_length` sorts each megabatch of 50 batches longest to shortest and walks it in
that order, so the first steps see only the longest rows and every 50 batches the model goes through a
long-to-short curriculum (on Gemma 3 270M: held-out response loss 3.14 after 12 steps, 0.62 for the
seed recipe). Here rows are shuffled, cut into pools of `pool_batches` batches, each pool is sorted by
length and cut into batches (rows of a batch have near-equal lengths), and then all batches are
shuffled together, so any step sees rows of any length.

The order depends only on (seed, epoch): a resumed run, whose trainer skips the batches it already
trained on, lands on the same batches, and every process of a multi-process launch computes the same
order (accelerate hands batch k to rank k % world_size).
"""
from __future__ import annotations

import random
from typing import Sequence


class LengthBucketSampler:
    """Row indices, batch after batch: each run of `batch_size` indices is one batch of similar lengths.

    A plain index sampler (not a batch sampler) so the trainer's DataLoader, accelerate's sharding and
    its batch skipping on resume work unchanged; the one short batch (rows % batch_size) comes last so
    the DataLoader's chunking into `batch_size` stays aligned with the batches cut here.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.seed = seed
        self.pool_batches = pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer (through accelerate) before each epoch, the resumed one included."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"edgetune-length-buckets/{self.seed}/{self.epoch}")  # str seeds are stable across processes
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        pool = self.batch_size * self.pool_batches
        full, short = [], []
        for start in range(0, len(order), pool):
            # Stable sort: rows of equal length keep their shuffled order, so batch make-up varies by epoch.
            rows = sorted(order[start:start + pool], key=self.lengths.__getitem__)
            for i in range(0, len(rows), self.batch_size):
                batch = rows[i:i + self.batch_size]
                (full if len(batch) == self.batch_size else short).append(batch)
        rng.shuffle(full)
        return full + short  # pools are whole batches, so at most one short batch, from the last pool

    def __iter__(self):
        for batch in self.batches():
            yield from batch

    def __len__(self) -> int:
        return len(self.lengths)


def padding_share(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest row."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / padded if padded else 0.0
