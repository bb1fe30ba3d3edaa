"""PacGAN/VEEGAN mode metrics on samples whose answers are known."""
import jax
import numpy as np
import pytest
from scipy import special

from gan_jax import distributions
from gan_jax.metrics import modes

RING = distributions.get_toy_dataset("ring8")
GRID = distributions.get_toy_dataset("grid25")


def at_centres(mixture, per_mode):
  """``per_mode[k]`` copies of the centre of mode k, ``(sum(per_mode), 2)``."""
  return np.repeat(mixture.means, per_mode, axis=0)


def metrics(samples, mixture):
  return modes.mode_metrics(samples, mixture.means, mixture.stds)


@pytest.mark.parametrize("mixture", [RING, GRID], ids=["ring8", "grid25"])
def test_perfect_sampler_covers_every_mode_with_98_9_percent_high_quality(mixture):
  samples = np.asarray(mixture.sample(jax.random.PRNGKey(0), modes.NUM_SAMPLES))
  result = metrics(samples, mixture)
  assert result["modes"] == mixture.num_modes
  # P(|x - mode| <= 3 std) for a 2-D isotropic Gaussian is 1 - exp(-9/2); binomial std 0.002.
  np.testing.assert_allclose(result["high_quality"], 1 - np.exp(-4.5), atol=0.008)
  # Only the histogram's sampling noise, about (K - 1) / (2 n).
  assert result["reverse_kl"] < 3 * (mixture.num_modes - 1) / (2 * modes.NUM_SAMPLES)


def test_samples_on_the_centres_score_exactly():
  result = metrics(at_centres(GRID, 100), GRID)
  assert result == {"modes": 25, "high_quality": 1.0, "reverse_kl": 0.0}


def test_one_dropped_mode():
  per_mode = np.full(8, 100)
  per_mode[3] = 0
  result = metrics(at_centres(RING, per_mode), RING)
  assert result["modes"] == 7 and result["high_quality"] == 1.0
  np.testing.assert_allclose(result["reverse_kl"], np.log(8 / 7), rtol=1e-12)


def test_off_mode_samples_lower_high_quality_but_not_coverage():
  on_mode = at_centres(RING, 50)
  halfway = 0.5 * (RING.means + np.roll(RING.means, 1, axis=0))  # between neighbouring modes
  samples = np.concatenate([on_mode, np.repeat(halfway, 50, axis=0)])
  result = metrics(samples, RING)
  assert result["modes"] == 8 and result["high_quality"] == 0.5
  np.testing.assert_allclose(result["reverse_kl"], 0.0, atol=1e-12)


def test_high_quality_radius_is_three_standard_deviations():
  std = GRID.stds[0]
  offsets = np.array([[2.99 * std, 0.0], [0.0, 3.01 * std]])
  counts = modes.high_quality_counts(GRID.means[:1] + offsets, GRID.means, GRID.stds)
  assert counts.sum() == 1 and counts[0] == 1


def test_a_mode_needs_twenty_high_quality_samples():
  per_mode = np.full(8, 30)
  per_mode[0], per_mode[1] = modes.MIN_COUNT - 1, modes.MIN_COUNT
  assert metrics(at_centres(RING, per_mode), RING)["modes"] == 7


def test_reverse_kl_matches_float64_reference_on_uneven_histogram():
  per_mode = np.arange(1, 26) * 7
  samples = at_centres(GRID, per_mode)
  histogram = per_mode / per_mode.sum()
  expected = np.sum(special.rel_entr(histogram, np.full(25, 1 / 25)))
  np.testing.assert_allclose(metrics(samples, GRID)["reverse_kl"], expected, rtol=1e-12)


def test_no_high_quality_sample_gives_nan_reverse_kl():
  result = metrics(np.full((100, 2), 10.0), RING)
  assert result["modes"] == 0 and result["high_quality"] == 0.0
  assert np.isnan(result["reverse_kl"])


def test_shape_errors_are_reported():
  with pytest.raises(ValueError, match="expected samples"):
    modes.mode_metrics(np.zeros((10, 3)), RING.means, RING.stds)
  with pytest.raises(ValueError, match=r"expected one std per mode, \(8,\), got shape \(3,\)"):
    modes.mode_metrics(np.zeros((10, 2)), RING.means, RING.stds[:3])


def test_a_sample_belongs_to_the_nearest_mode_in_its_standard_deviations():
  """Modes at 0 (std 0.01) and 1 (std 1): x = 0.4 is 40 stds from the first and 0.6 from the
  second, so it is a high-quality sample of the second, though nearer the first."""
  means, stds = np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0.01, 1.0])
  counts = modes.high_quality_counts(np.array([[0.4, 0.0], [0.005, 0.0], [0.0, 5.0]]), means,
                                     stds)
  np.testing.assert_array_equal(counts, [1, 1])  # (0, 5) is 5.1 stds from the wide mode


def test_min_count_one_counts_every_mode_with_a_high_quality_sample_as_pacgan_code_does():
  per_mode = np.array([1, 0, 5, 19, 20, 0, 0, 3])
  assert metrics(at_centres(RING, per_mode), RING)["modes"] == 1
  assert modes.mode_metrics(at_centres(RING, per_mode), RING.means, RING.stds,
                            min_count=1)["modes"] == 5


def test_an_empty_sample_set_is_refused():
  with pytest.raises(ValueError, match="no samples"):
    modes.mode_metrics(np.zeros((0, 2)), RING.means, RING.stds)
