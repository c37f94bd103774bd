"""The held-out rows of a run, prepared once: every measurement after training is made on them.

The merged tokenizer carries the template training used, so the rows are rendered with it and split
as in training (same seed). From the held-out part:
  ids / masks   whole rows as token ids (BOS, turn end and truncation as in training); masks are 1 on
                the response tokens, where perplexity is measured
  prompts       the first `n_prompts` prompts as ids, answered greedily by every model
  expected      their answers in the dataset (accuracy is exact match against these)
  messages      the same prompts as conversations (the chat path)
Rows are taken while their next-token log-probabilities fit LOGPROB_BYTES for this vocabulary (about
a thousand positions for a 262k-token vocabulary), so the base, the F16 file and every quantized file
are measured over the same rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgetune.inputs import data as data_mod
from edgetune.inputs.data import Example, Prepared

LOGPROB_BYTES = 1 << 30  # a reference's log-probabilities kept in memory (float32)


@dataclass
class Heldout:
    ids: list[list[int]]
    masks: list[list[int]]
    prompts: list[list[int]] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    messages: list[list[dict]] = field(default_factory=list)

    def first(self, n: int) -> Heldout:
        """The first `n` rows, with every prompt."""
        return dataclasses.replace(self, ids=self.ids[:n], masks=self.masks[:n])


def split(recipe, merged, tok) -> Prepared:
    """The run's data rendered with the merged tokenizer's template and split as training split it."""
    spec = dataclasses.replace(recipe.data, template="model", allow_lost_responses=True)
    return data_mod.prepare(spec, tok, recipe.train.seed, str(merged))


def rows(examples: list[Example], tok, max_length: int, n_prompts: int) -> Heldout:
    """`examples` as held-out rows for `tok`, as many as LOGPROB_BYTES allows."""
    per_position = max(len(tok), 1) * 4
    ids, masks, positions = [], [], 0
    for r in data_mod.tokenize(examples, tok, max_length, completion_only=True):
        n = len(r["input_ids"]) - 1
        if n < 1:
            continue
        if ids and (positions + n) * per_position > LOGPROB_BYTES:
            break
        ids.append(r["input_ids"])
        masks.append(r["completion_mask"])
        positions += n
    prompted = [e for e in examples if e.prompt][:n_prompts]
    # The template writes BOS into the prompt text where the model uses one: no special tokens added.
    prompts = [tok(e.prompt, add_special_tokens=False)["input_ids"] for e in prompted]
    expected = [(e.answer or e.completion).strip() for e in prompted]
    return Heldout(ids, masks, prompts, expected, [e.messages for e in prompted])
