"""Toy targets: the PacGAN/VEEGAN layouts, sampling moments and normalized densities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import distributions


def test_ring8_and_grid25_layouts():
  ring = distributions.get_toy_dataset("ring8")
  np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 1.0)
  np.testing.assert_allclose(ring.stds, 0.01)
  grid = distributions.get_toy_dataset("grid25")
  assert sorted(set(grid.means[:, 0])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
  assert grid.num_modes == 25 and len({tuple(m) for m in grid.means}) == 25
  np.testing.assert_allclose(grid.stds, 0.05)


def test_samples_hit_every_mode_evenly_with_the_right_spread():
  ring = distributions.ring()
  x = np.asarray(ring.sample(jax.random.PRNGKey(0), 80_000))
  nearest = np.argmin(((x[:, None] - ring.means[None]) ** 2).sum(-1), axis=1)
  counts = np.bincount(nearest, minlength=8)
  np.testing.assert_allclose(counts / len(x), 1 / 8, atol=0.006)
  offsets = x - ring.means[nearest]
  np.testing.assert_allclose(offsets.std(axis=0), 0.01, rtol=0.02)


def test_log_prob_integrates_to_one():
  mix = distributions.mixture([-1.0, 2.0], [0.3, 0.5], [0.25, 0.75])
  xs = np.linspace(-5, 6, 20001)[:, None]
  p = np.exp(np.asarray(mix.log_prob(jnp.asarray(xs))))
  np.testing.assert_allclose(p.sum() * (xs[1, 0] - xs[0, 0]), 1.0, rtol=1e-4)
  grid = distributions.grid()
  ticks = np.linspace(-5.0, 5.0, 1001)
  cells = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)
  p2 = np.exp(np.asarray(grid.log_prob(jnp.asarray(cells))))
  np.testing.assert_allclose(p2.sum() * (ticks[1] - ticks[0]) ** 2, 1.0, rtol=1e-3)


def test_unknown_dataset_names_the_choices():
  with pytest.raises(ValueError, match="ring8"):
    distributions.get_toy_dataset("ring9")


def test_unequal_weights_in_log_prob_and_sample():
  """log_prob equals the closed-form mixture density (scipy-free float64 sum), and samples fall
  into the modes in proportion to the weights."""
  means, stds, weights = [-6.0, 0.0, 6.0], [0.5, 1.0, 0.25], [1.0, 2.0, 5.0]  # separated
  mix = distributions.mixture(means, stds, weights)
  xs = np.array([-6.2, -3.0, 0.3, 3.0, 5.9])
  w = np.asarray(weights) / np.sum(weights)
  expected = sum(wk * np.exp(-0.5 * ((xs - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
                 for wk, m, s in zip(w, means, stds))
  np.testing.assert_allclose(np.exp(np.asarray(mix.log_prob(jnp.asarray(xs[:, None])))),
                             expected, rtol=1e-5)
  samples = np.asarray(mix.sample(jax.random.PRNGKey(0), 40_000))[:, 0]
  nearest = np.argmin(np.abs(samples[:, None] - np.asarray(means)[None]), axis=1)
  np.testing.assert_allclose(np.bincount(nearest, minlength=3) / len(samples), w, atol=0.01)


@pytest.mark.parametrize("means, stds, weights, message", [
    ([[0.0], [1.0]], [1.0, 0.0], [0.5, 0.5], "stds must be positive"),
    ([[0.0], [1.0]], [1.0, 1.0], [1.0, -0.5], "weights must be non-negative and sum to one"),
    ([[0.0], [1.0]], [1.0, 1.0], [5.0, 5.0], "weights must be non-negative and sum to one"),
])
def test_a_mixture_that_is_no_density_is_refused(means, stds, weights, message):
  with pytest.raises(ValueError, match=message):
    distributions.GaussianMixture(np.array(means), np.array(stds), np.array(weights))


def test_mixture_refuses_weights_it_cannot_normalize():
  """Weights summing to 0 were divided by it, and the NaNs then refused without the cause."""
  with pytest.raises(ValueError, match=r"weights must be non-negative with a positive sum, got "
                     r"\[0. 0.\]"):
    distributions.mixture([0.0, 1.0], 1.0, [0.0, 0.0])


def test_log_prob_refuses_points_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r"log_prob takes points of shape \(n, 2\), got \(5,\)"):
    distributions.ring().log_prob(jnp.zeros(5))
