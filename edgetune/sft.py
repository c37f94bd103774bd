"""TRL's SFTTrainer with edgetune's batch order (imported only when training: it pulls in torch and TRL)."""
from __future__ import annotations

from trl import SFTTrainer

from edgetune.sampler import LengthBucketSampler


class Trainer(SFTTrainer):
    """SFTTrainer whose unpacked training batches come from `LengthBucketSampler`.

    Set `train_sampling_strategy="random"` in the config: packed datasets keep TRL's random sampler,
    unpacked ones get length buckets in random order (see edgetune/sampler.py for why not
    transformers' `group_by_length`).
    """

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.packing or dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthBucketSampler(lengths, self.args.per_device_train_batch_size, seed=seed)
