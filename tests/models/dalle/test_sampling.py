import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalleflow.models.dalle.sampling import filter_logits, sample, top_k_mask, top_p_mask


def _logits(rows=4, n=16384, seed=0):
    logits = np.random.default_rng(seed).standard_normal((rows, n)).astype(np.float32) * 3
    logits[0, :10] = 7.5  # ties at the top
    logits[1, 100:200] = -0.0  # signed zeros in the middle
    return logits


@pytest.mark.parametrize("k", [1, 5, 50, 16383])
def test_top_k_keeps_what_sorting_keeps(k):
    logits = _logits()
    kth = np.sort(logits, axis=-1)[:, ::-1][:, k - 1 : k]
    assert np.array_equal(np.asarray(top_k_mask(jnp.asarray(logits), k)), logits >= kth)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_top_p_keeps_the_smallest_set_reaching_p(p):
    logits = _logits()
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    order = np.argsort(-logits, axis=-1, kind="stable")
    expected = np.zeros_like(logits, bool)
    for row in range(logits.shape[0]):
        mass_before = np.cumsum(probs[row, order[row]]) - probs[row, order[row]]
        expected[row, order[row][mass_before < p]] = True
    kept = np.asarray(top_p_mask(jnp.asarray(logits), p))
    assert np.array_equal(kept, expected)


def test_no_cut_keeps_everything_and_temperature_scales():
    logits = jnp.asarray(_logits(rows=2))
    filtered = filter_logits(logits, 2.0, jnp.int32(0), jnp.float32(1.0))
    assert np.allclose(np.asarray(filtered), np.asarray(logits) / 2)


def test_top_k_then_top_p_renormalises_over_the_top_k():
    logits = jnp.asarray([[3.0, 2.0, 1.0, 0.0, -1.0]])
    # top-2 leaves softmax(3, 2) = (0.73, 0.27): top_p 0.7 keeps only the first
    kept = np.isfinite(np.asarray(filter_logits(logits, 1.0, jnp.int32(2), jnp.float32(0.7))))
    assert kept.tolist() == [[True, False, False, False, False]]


def test_draws_follow_the_softmax_and_never_hit_filtered_entries():
    logits = jnp.asarray([1.0, -jnp.inf, 0.0, 2.0, -jnp.inf])
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = np.asarray(jax.jit(jax.vmap(sample, in_axes=(0, None)))(keys, logits))
    counts = np.bincount(draws, minlength=5) / len(draws)
    expected = np.asarray(jax.nn.softmax(logits))
    assert counts[1] == counts[4] == 0
    assert np.abs(counts - expected).max() < 0.015  # ~4 standard errors at 20000 draws
