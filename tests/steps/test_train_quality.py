"""Per step, edgetune must learn at least as much as the seed recipe (TRL defaults, loss on all tokens)."""
from test_sampler import load_bench

import arch_models


def test_same_steps_learn_at_least_as_much_as_the_seed_recipe(tmp_path):
    """A Gemma-3-shaped tiny model, 30 steps on rows of 1 to 40 words of context: held-out response loss
    of edgetune's run is no worse than the seed recipe's on the same rows, steps, batch and lr."""
    from edgetune import train

    bench = load_bench("train")
    base = str(arch_models.build("gemma3", tmp_path / "gemma3"))
    data = str(bench.make_data(tmp_path / "rows.jsonl", 400))
    losses = {}
    for kind in ("seed", "ours"):
        r = bench.bench_recipe(kind, base, data, steps=30, out=str(tmp_path / "runs"), accum=1)
        tok = train.load_tokenizer(base)
        _, eval_ds, _ = train.build_datasets(r, tok)
        run = bench.train_ours if kind == "ours" else (lambda r, out: bench.train_seed(r, tok, out))
        model, _, tokens, _ = run(r, tmp_path / "runs" / kind)
        assert tokens > 0
        losses[kind] = bench.response_loss(model, eval_ds)
    assert losses["ours"] <= losses["seed"], losses
