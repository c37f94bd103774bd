"""Every reported figure is defined once (edgetune.metrics): checked against the definitions written out."""
import math

import numpy as np

from edgetune import metrics


def _reference_log_softmax(logits):
    x = logits.astype(np.float64)
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def test_log_softmax_matches_float64_on_a_large_vocabulary():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4, 262_144)) * 8).astype(np.float32)
    ours = metrics.log_softmax(logits)
    assert ours.dtype == np.float32 and ours.shape == logits.shape
    assert np.abs(ours - _reference_log_softmax(logits)).max() < 1e-4
    assert np.allclose(np.exp(ours.astype(np.float64)).sum(-1), 1.0, atol=1e-5)


def test_kld_is_zero_for_the_same_distribution_and_matches_the_definition():
    rng = np.random.default_rng(1)
    ref = metrics.log_softmax(rng.standard_normal((5, 100)).astype(np.float32))
    other = metrics.log_softmax(rng.standard_normal((5, 100)).astype(np.float32))
    assert (metrics.kld(ref, ref) == 0).all()
    want = (np.exp(ref.astype(np.float64)) * (ref.astype(np.float64) - other)).sum(-1)
    assert np.allclose(metrics.kld(ref, other), want, rtol=1e-5) and (metrics.kld(ref, other) > 0).all()
    assert metrics.top1_same(ref, ref) == 5 and metrics.top1_same(ref, other) == int(
        (ref.argmax(-1) == other.argmax(-1)).sum())


def test_perplexity_counts_only_masked_next_tokens():
    # Uniform over 4 tokens at every position: perplexity 4 wherever it is measured.
    lp = [np.full((3, 4), math.log(0.25), dtype=np.float32)]
    assert math.isclose(metrics.perplexity(lp, [[0, 1, 2, 3]]), 4.0, rel_tol=1e-6)
    # Certain of the right token at position 1 only; the mask keeps only token 2 (predicted at position 1).
    sure = np.full((3, 4), math.log(1e-9), dtype=np.float32)
    sure[1, 2] = 0.0
    assert math.isclose(metrics.perplexity([sure], [[0, 1, 2, 3]], [[0, 0, 1, 0]]), 1.0, rel_tol=1e-6)
    assert math.isnan(metrics.perplexity([sure], [[0, 1, 2, 3]], [[1, 0, 0, 0]]))  # the first token is never predicted
    total, n = metrics.nll(sure, [0, 1, 2, 3], [1, 1, 1, 1])
    assert n == 3 and math.isclose(metrics.perplexity_of([total], [n]), math.exp(total / 3))


def test_nmse_and_accuracy():
    ref = [np.array([[1.0, 2.0]]), np.array([[3.0]])]
    assert metrics.nmse(ref, ref) == 0
    assert math.isclose(metrics.nmse([np.array([[1.0, 2.0]]), np.array([[4.0]])], ref), 1 / 14)
    assert metrics.accuracy(["a", "b"], ["a", "c"]) == 0.5
    assert metrics.accuracy([], []) is None
