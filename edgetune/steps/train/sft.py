"""TRL's SFTTrainer with edgetune's batch order and output head (imported only when training: it pulls in
torch and TRL)."""
from __future__ import annotations

from peft import PeftModel
from trl import SFTTrainer

from edgetune.steps.train import loss
from edgetune.steps.train.sampler import LengthBucketSampler


class Trainer(SFTTrainer):
    """SFTTrainer whose unpacked training batches come from `LengthBucketSampler` and whose loss runs the
    output head only at positions with a label (loss.py).

    Set `train_sampling_strategy="random"` in the config: packed datasets keep TRL's random sampler,
    unpacked ones get length buckets in random order (see sampler.py for why not
    transformers' `group_by_length`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        loss.install(self._causal_lm())  # after TRL's own fused head, which it falls back to

    def _causal_lm(self):
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def check_loss_head(self) -> str:
        """Check the head at loss positions against the model's own forward on two training rows; on a
        mismatch put TRL's head back. Returns what the training log should say."""
        rows = [self.train_dataset[i] for i in range(min(2, len(self.train_dataset)))]
        device = self._causal_lm().get_output_embeddings().weight.device
        batch = {k: v.to(device) for k, v in self.data_collator(rows).items() if hasattr(v, "to")}
        was_training = self.model.training
        self.model.eval()  # no dropout: the two computations must see the same activations
        try:
            problem = loss.check_head(self.model, batch)
        finally:
            self.model.train(was_training)
        if problem:
            loss.uninstall(self._causal_lm())
            return f"output head on every position (TRL's): the loss-positions head disagreed ({problem})"
        return "output head and loss at loss positions only (checked against the model's own forward)"

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.packing or dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthBucketSampler(lengths, self.args.per_device_train_batch_size, seed=seed)
