"""Metrics on feature arrays against float64 references, known values and limiting cases."""
import itertools
import tracemalloc

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg
from scipy.spatial.distance import cdist

from gan_jax import metrics
from gan_jax.cli import UsageError
from gan_jax.metrics import _blocks, _kernel, _manifold, evaluation
from gan_jax.metrics.extractor import FeatureExtractor


def random_covariance(rng, dim, rank=None):
  factor = rng.normal(size=(dim, rank or 2 * dim))
  return factor @ factor.T / factor.shape[1]


def sqrtm_fid(mu1, sigma1, mu2, sigma2):
  """The textbook formula with scipy's general matrix square root (well-conditioned inputs)."""
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2) - 2 * np.trace(covmean).real


# --- Fréchet distance -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_frechet_distance_matches_scipy_sqrtm(seed):
  rng = np.random.default_rng(seed)
  mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
  sigma1, sigma2 = random_covariance(rng, 16), random_covariance(rng, 16)
  np.testing.assert_allclose(metrics.frechet_distance(mu1, sigma1, mu2, sigma2),
                             sqrtm_fid(mu1, sigma1, mu2, sigma2), rtol=1e-10)


def test_frechet_distance_is_symmetric_and_zero_for_identical_gaussians():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
  sigma1, sigma2 = random_covariance(rng, 32), random_covariance(rng, 32)
  np.testing.assert_allclose(metrics.frechet_distance(mu1, sigma1, mu2, sigma2),
                             metrics.frechet_distance(mu2, sigma2, mu1, sigma1), rtol=1e-12)
  assert metrics.frechet_distance(mu1, sigma1, mu1, sigma1) < 1e-10 * np.trace(sigma1)


def test_frechet_distance_is_exact_for_singular_covariances():
  # Covariances with a common eigenbasis and half their eigenvalues zero:
  # d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 exactly.
  rng = np.random.default_rng(1)
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  a = np.where(np.arange(20) < 10, rng.uniform(0.5, 2, 20), 0.0)
  b = np.where(np.arange(20) % 2 == 0, rng.uniform(0.5, 2, 20), 0.0)
  mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = metrics.frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T)
  # Round-off of size eps in a zero eigenvalue becomes sqrt(eps) ~ 1e-8 in the square root: the
  # conditioning of the problem at singular covariances, not of the method.
  np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_fid_is_non_negative_and_near_zero_on_rank_deficient_features():
  # 20 samples in 64 dimensions: covariances of rank 19, the case where sqrtm(sigma1 sigma2)
  # needs pytorch-fid's eps fallback.
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
  assert abs(metrics.fid_from_features(x, x)) < 1e-10
  assert metrics.fid_from_features(x, y) > 0
  mu, sigma = metrics.feature_statistics(x)
  for scale in (1e-12, 1e-6, 1.0):  # nearly identical Gaussians, relative to eps in float64
    assert metrics.frechet_distance(mu, sigma, mu + scale, sigma) >= 0
    np.testing.assert_allclose(metrics.frechet_distance(mu, sigma, mu + scale, sigma),
                               64 * scale ** 2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("samples, dims", [(20, 64), (500, 2048)])
def test_fid_from_features_is_exact_with_fewer_samples_than_dimensions(samples, dims):
  """A copy scaled by c: sigma2 = c^2 sigma1, so FID = (1 - c)^2 (|mu1|^2 + tr sigma1) exactly.
  Near c = 1 the covariances' square-root route is 4-6% off here (their zero eigenvalues)."""
  x = np.random.default_rng(6).normal(size=(samples, dims))
  mu, sigma = metrics.feature_statistics(x)
  c = 1 + 1e-3
  np.testing.assert_allclose(metrics.fid_from_features(x, c * x),
                             (1 - c) ** 2 * (mu @ mu + np.trace(sigma)), rtol=1e-8)


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
  x = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
  mu, sigma = metrics.feature_statistics(x)
  x64 = x.astype(np.float64)
  centred = x64 - x64.mean(axis=0)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, x64.mean(axis=0), rtol=1e-14)
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)


def test_frechet_distance_accepts_singular_covariances_rounded_to_float32():
  """100 samples in 256 dimensions, statistics stored in float32: rounding makes the zero
  eigenvalues about -1e-7 of the largest, which float64's tolerance would reject."""
  rng = np.random.default_rng(4)
  stats = [metrics.feature_statistics(rng.normal(size=(100, 256)) + shift) for shift in (0, 0.1)]
  exact = metrics.frechet_distance(*stats[0], *stats[1])
  rounded = [x.astype(np.float32) for pair in stats for x in pair]
  np.testing.assert_allclose(metrics.frechet_distance(*rounded), exact, rtol=1e-5)
  # also when the float32 statistics are passed on as float64
  widened = [x.astype(np.float64) for x in rounded]
  np.testing.assert_allclose(metrics.frechet_distance(*widened), exact, rtol=1e-5)
  with pytest.raises(ValueError, match="positive semidefinite"):  # clearly negative still fails
    metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1e-3]).astype(np.float32),
                             np.zeros(2), np.eye(2))


def test_frechet_distance_rejects_bad_input():
  with pytest.raises(ValueError, match="positive semidefinite"):
    metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="expected means"):
    metrics.frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_fid_of_one_dimensional_features_is_the_closed_form():
  """D = 1: (mu1 - mu2)^2 + (s1 - s2)^2 for standard deviations s (np.cov gives a 0-d array)."""
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(100, 1)), 2 + 3 * rng.normal(size=(100, 1))
  assert metrics.feature_statistics(a)[1].shape == (1, 1)
  s_a, s_b = np.std(a, ddof=1), np.std(b, ddof=1)
  np.testing.assert_allclose(metrics.fid_from_features(a, b),
                             (a.mean() - b.mean()) ** 2 + (s_a - s_b) ** 2, rtol=1e-12)


def test_frechet_distance_takes_bfloat16_covariances_at_their_rounding():
  """Covariances stored in bfloat16 (eps 2^-8) have rounding-negative eigenvalues near -4e-3
  of the largest: within bfloat16's tolerance, not float64's."""
  mu, sigma = metrics.feature_statistics(np.random.default_rng(0).normal(size=(30, 64)))
  rounded = np.asarray(jnp.asarray(sigma, jnp.bfloat16))
  assert np.linalg.eigvalsh(rounded.astype(np.float64)).min() < -1e-3
  assert metrics.frechet_distance(mu, rounded, mu, rounded) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("metric", [
    metrics.fid_from_features, metrics.kernel_distance, metrics.precision_recall,
    metrics.density_coverage, lambda a, b: metrics.frechet_distance(
        *metrics.feature_statistics(b), a.mean(axis=0), np.cov(a, rowvar=False))])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the test's own np.cov of inf
def test_features_with_nan_or_inf_are_refused_not_scored(metric, bad):
  """20 of 200 rows NaN: nearest-neighbour metrics would give plausible numbers (NaN distances
  compare as false), FID a linear-algebra failure, KID NaN."""
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
  fake[:20] = bad
  with pytest.raises(ValueError, match="hold NaN or inf"):
    metric(fake, real)
  with pytest.raises(ValueError, match="hold NaN or inf"):
    metric(real, fake)


# --- Kernel distance --------------------------------------------------------------------------


def loop_kid(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written with explicit loops."""
  d = x.shape[1]
  k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
  m, n = len(x), len(y)
  kxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
  kyy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
  kxy = sum(k(a, b) for a in x for b in y) / (m * n)
  return kxx + kyy - 2 * kxy


def test_kernel_distance_matches_loop_reference(monkeypatch):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
  expected = loop_kid(x, y)
  assert metrics.kernel_distance(x, y) == (pytest.approx(expected, rel=1e-12), 0.0)
  monkeypatch.setattr(_blocks, "BLOCK_ENTRIES", 10)  # one or two rows per block
  assert metrics.kernel_distance(x, y).mean == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("from_whole_kernel_matrices", [False, True])
def test_kernel_distance_subsets_average_the_reference_over_the_drawn_subsets(
    monkeypatch, from_whole_kernel_matrices):
  """Both ways of summing the subsets' kernels: each subset's own matrices, or indicator-weighted
  sums of the whole sets' matrices (in blocks of one or two rows here)."""
  monkeypatch.setattr(_kernel, "_kernel_matrices_are_cheaper",
                      lambda *sizes: from_whole_kernel_matrices)
  monkeypatch.setattr(_blocks, "BLOCK_ENTRIES", 15)
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(12, 3)), rng.normal(size=(10, 3))
  draws = np.random.default_rng(5)
  estimates = [loop_kid(x[draws.choice(12, 6, replace=False)],
                        y[draws.choice(10, 6, replace=False)]) for _ in range(4)]
  got = metrics.kernel_distance(x, y, num_subsets=4, subset_size=6, seed=5)
  np.testing.assert_allclose(got, (np.mean(estimates), np.std(estimates)), rtol=1e-10)
  # Subsets as large as the sets are permutations of them: every estimate is the full one.
  full = metrics.kernel_distance(x[:10], y)
  whole = metrics.kernel_distance(x[:10], y, num_subsets=3, subset_size=10)
  np.testing.assert_allclose(whole.mean, full.mean, rtol=1e-12)
  assert whole.std < 1e-12


@pytest.mark.parametrize("images, dim, subsets, size, expected", [
    (2500, 128, 100, 1000, True), (5000, 2048, 100, 1000, True),  # the MNIST floor; Inception
    (50_000, 2048, 100, 1000, False),  # more operations than the subsets' own matrices
    (5000, 2048, 1000, 1000, False),  # fewer operations, but 5M-entry subset indicators
    (2500, 128, 100, 50, False)])
def test_kernel_distance_takes_the_whole_matrices_where_cheaper(images, dim, subsets, size,
                                                                 expected):
  assert _kernel._kernel_matrices_are_cheaper(images, images, dim, subsets, size) == expected


def test_kernel_distance_is_near_zero_for_one_distribution():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
  same = metrics.kernel_distance(x, y, num_subsets=20, subset_size=500)
  shifted = metrics.kernel_distance(x, y + 0.25, num_subsets=20, subset_size=500)
  assert abs(same.mean) < 0.02 * shifted.mean
  assert abs(same.mean) < 3 * same.std / np.sqrt(20)


def test_kernel_distance_rejects_bad_input():
  with pytest.raises(ValueError, match="subset_size"):
    metrics.kernel_distance(np.zeros((5, 2)), np.zeros((8, 2)), num_subsets=2, subset_size=6)
  with pytest.raises(ValueError, match="expected features"):
    metrics.kernel_distance(np.zeros((5, 2)), np.zeros((8, 3)))
  with pytest.raises(ValueError, match="num_subsets=0 must be >= 1"):
    metrics.kernel_distance(np.zeros((5, 2)), np.zeros((8, 2)), num_subsets=0, subset_size=4)


# --- Inception score --------------------------------------------------------------------------


def test_inception_score_limits():
  identical = np.tile([0.1, 0.6, 0.3], (40, 1))
  assert metrics.inception_score(identical, num_splits=4) == (pytest.approx(1.0, abs=1e-12), 0.0)
  one_hot = np.eye(8)[np.arange(80) % 8]  # balanced in each of the 10 consecutive splits
  score = metrics.inception_score(one_hot)
  assert score.mean == pytest.approx(8.0, rel=1e-12) and score.std < 1e-12


def test_inception_score_matches_float64_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(103, 6)) * 3
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  probs[::7, 0] = 0.0  # zero probabilities must be handled as 0 log 0 = 0
  probs /= probs.sum(axis=1, keepdims=True)
  scores = []
  for i in range(5):
    part = probs[i * 103 // 5:(i + 1) * 103 // 5]
    py = part.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
      kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  got = metrics.inception_score(probs, num_splits=5)
  np.testing.assert_allclose(got, (np.mean(scores), np.std(scores)), rtol=1e-12)


def test_inception_score_rejects_too_few_samples():
  with pytest.raises(ValueError, match="num_splits"):
    metrics.inception_score(np.full((5, 2), 0.5), num_splits=10)
  with pytest.raises(ValueError, match="num_splits must be at least 1, got 0"):
    metrics.inception_score(np.full((5, 2), 0.5), num_splits=0)


@pytest.mark.parametrize("transform", [
    lambda p: 1.2 * p,             # scaled: one-hot rows would score 15.9 of at most K = 10
    lambda p: p[:, :9],            # a class column dropped
    lambda p: np.log(p + 1e-12),   # log-probabilities
    lambda p: np.where(p > 0.5, np.nan, p),
])
def test_inception_score_refuses_rows_that_are_not_probabilities(transform):
  probs = np.random.default_rng(0).dirichlet(np.full(10, 0.2), size=1000)
  metrics.inception_score(probs)  # accepted as given
  with pytest.raises(ValueError, match="probabilities|NaN"):
    metrics.inception_score(transform(probs))


# --- Precision, recall, density, coverage -----------------------------------------------------


def reference_manifold_metrics(real, fake, k_pr, k_dc):
  """The four metrics from full scipy distance matrices, as the authors' code writes them."""
  rr, ff, rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
  real_radii = np.sort(rr, axis=1)[:, k_pr]
  fake_radii = np.sort(ff, axis=1)[:, k_pr]
  precision = np.mean((rf <= real_radii[:, None]).any(axis=0))
  recall = np.mean((rf <= fake_radii[None, :]).any(axis=1))
  radii = np.sort(rr, axis=1)[:, k_dc]
  density = (rf < radii[:, None]).sum(axis=0).mean() / k_dc
  coverage = np.mean(rf.min(axis=1) < radii)
  return precision, recall, density, coverage


@pytest.mark.parametrize("block_entries", [7, 4_000_000])
def test_manifold_metrics_match_reference(monkeypatch, block_entries):
  monkeypatch.setattr(_blocks, "BLOCK_ENTRIES", block_entries)
  rng = np.random.default_rng(0)
  real, fake = rng.normal(size=(60, 4)), rng.normal(0.5, 1.0, size=(45, 4))
  expected = reference_manifold_metrics(real, fake, 3, 5)
  got = metrics.precision_recall(real, fake, k=3) + metrics.density_coverage(real, fake, k=5)
  np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("block_entries", [7, 4_000_000])
def test_manifold_metrics_decide_ties_on_discrete_features_as_exact_distances(monkeypatch,
                                                                             block_entries):
  """Integer features tie on ball boundaries by the thousand: centred on the real mean (no longer
  integers), |x|^2 + |y|^2 - 2 x.y rounded them either way (density 0.632 against 0.480)."""
  monkeypatch.setattr(_blocks, "BLOCK_ENTRIES", block_entries)
  rng = np.random.default_rng(0)
  real, fake = rng.integers(0, 4, (200, 3)) * 1.0, rng.integers(0, 4, (150, 3)) * 1.0
  got = metrics.precision_recall(real, fake, k=3) + metrics.density_coverage(real, fake, k=5)
  assert got == reference_manifold_metrics(real, fake, 3, 5)


def test_manifold_metrics_settle_all_pairs_tying_in_bounded_memory(monkeypatch):
  """Every distance between the real points 3 e_i (N = D = 400) is 3 sqrt(2), a tie with every
  radius, and the fakes are one real point repeated (a collapsed generator): all N^2 + M^2
  entries lie on a boundary. Taking all their differences at once held 1.5 GB here; a block at a
  time, and none for equal vectors, stays within a few blocks. The closed forms: every fake sits
  on real 0 (precision 1, density 1/k, as no fake lies strictly inside another ball); the fake
  balls have radius 0 and hold real 0 only (recall and coverage 1/N)."""
  monkeypatch.setattr(_blocks, "BLOCK_ENTRIES", 400_000)  # 3.2 MB of float64
  real = 3.0 * np.eye(400)
  fake = np.repeat(real[:1], 300, axis=0)
  tracemalloc.start()
  try:
    got = metrics.precision_recall(real, fake, k=3) + metrics.density_coverage(real, fake, k=5)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert got == (1.0, 1 / 400, 1 / 5, 1 / 400)
  assert peak < 40e6, f"{peak / 1e6:.0f} MB"


def test_a_collapsed_set_gets_exact_radii_without_recomputing_its_distances(monkeypatch):
  """Fakes collapsed to within 1e-7 of one real point: centred on the real mean (norms about
  64), their distances to each other (about 1e-12 squared) lie below the rounding error of
  |x|^2 + |y|^2 - 2 x.y, and all M^2 were recomputed one difference at a time (a minute for 3,000
  fakes of 2048 values). Centred on their own mean for their radii, only the k-th neighbours'
  entries come near a radius (one per row)."""
  rng = np.random.default_rng(0)
  real = rng.normal(size=(300, 64))
  fake = real[0] + 1e-7 * rng.normal(size=(300, 64))
  settle, near = _manifold._settle, []

  def counting_settle(*args):
    rows_near = settle(*args)
    near.append(len(rows_near))
    return rows_near

  monkeypatch.setattr(_manifold, "_settle", counting_settle)
  got = metrics.precision_recall(real, fake, k=3) + metrics.density_coverage(real, fake, k=5)
  np.testing.assert_allclose(got, reference_manifold_metrics(real, fake, 3, 5), rtol=1e-12)
  assert sum(near) < 4 * (len(real) + len(fake)), near  # 90,000 more with the real centring


def test_manifold_metrics_on_identical_and_disjoint_sets():
  rng = np.random.default_rng(1)
  real = rng.normal(size=(300, 8))
  # Identical sets: every point lies in its own ball (precision, recall, coverage 1), and the
  # balls together hold each point k times in total (density 1).
  assert metrics.precision_recall(real, real) == (1.0, 1.0)
  np.testing.assert_allclose(metrics.density_coverage(real, real), (1.0, 1.0), rtol=1e-12)
  far = real + 100.0
  assert metrics.precision_recall(real, far) == (0.0, 0.0)
  assert metrics.density_coverage(real, far) == (0.0, 0.0)


def test_manifold_metrics_on_one_distribution_are_high():
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
  precision, recall = metrics.precision_recall(real, fake)
  density, coverage = metrics.density_coverage(real, fake)
  assert precision > 0.9 and recall > 0.9 and coverage > 0.9
  assert 0.85 < density < 1.15


def test_manifold_metrics_reject_bad_input():
  with pytest.raises(ValueError, match="expected real"):
    metrics.precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="k=5"):
    metrics.density_coverage(np.random.default_rng(0).normal(size=(5, 2)), np.zeros((5, 2)))
  with pytest.raises(ValueError, match="no fake features"):
    metrics.density_coverage(np.random.default_rng(0).normal(size=(50, 2)), np.zeros((0, 2)))
  with pytest.raises(ValueError, match="k=3 needs at least k . 1 = 4 real features, got 0"):
    metrics.precision_recall(np.zeros((0, 2)), np.zeros((5, 2)))
  with pytest.raises(ValueError, match="k=3 needs at least k . 1 = 4 fake features, got 3"):
    metrics.precision_recall(np.eye(5, 2), np.eye(3, 2))
  with pytest.raises(ValueError, match="k must be at least 1, got 0"):
    metrics.density_coverage(np.eye(5, 2), np.eye(3, 2), k=0)
  with pytest.raises(ValueError, match="dimension 0"):
    metrics.precision_recall(np.zeros((5, 0)), np.zeros((5, 0)))


def test_manifold_metrics_do_not_see_an_offset_shared_by_both_sets():
  """The metrics are translation-invariant: features 1e6 from the origin with a spread of 0.01
  score as at the origin (uncentred, |x|^2 + |y|^2 - 2 x.y cancelled to (1.0, 1.0), (0.0, 0.0))."""
  rng = np.random.default_rng(3)
  real, fake = 0.01 * rng.normal(size=(300, 16)), 0.01 * rng.normal(0.3, 1.0, size=(300, 16))
  at_origin = metrics.precision_recall(real, fake) + metrics.density_coverage(real, fake)
  assert 0.05 < min(at_origin) and max(at_origin) < 0.99
  far = metrics.precision_recall(real + 1e6, fake + 1e6) + metrics.density_coverage(
      real + 1e6, fake + 1e6)
  np.testing.assert_allclose(far, at_origin, atol=0.01)


# --- evaluate ---------------------------------------------------------------------------------


def pixel_extractor():
  """Features: the flattened pixels; logits: 4 classes from the mean brightness."""

  def apply_fn(variables, images):
    features = images.reshape(images.shape[0], -1)
    brightness = jnp.mean(features, axis=1, keepdims=True)
    return features, variables * brightness

  return FeatureExtractor(apply_fn, jnp.arange(4.0) * 20, batch_size=64)


def blobs(rng, n, spread):
  """Images ``(n, 4, 4, 1)``: a fixed gradient plus Gaussian noise of the given spread."""
  return np.tanh(spread * rng.normal(size=(n, 4, 4, 1)) + np.linspace(-1, 1, 16).reshape(4, 4, 1))


def test_evaluate_tells_fidelity_from_diversity_and_reports_the_floor():
  rng = np.random.default_rng(0)
  real, good = blobs(rng, 400, 1.0), blobs(rng, 200, 1.0)
  collapsed, wide = blobs(rng, 200, 0.3), blobs(rng, 200, 3.0)
  options = evaluation.MetricOptions(kid_subsets=10, kid_subset_size=100)
  results = {name: evaluation.evaluate(fake, real, pixel_extractor(), options)
             for name, fake in [("good", good), ("collapsed", collapsed), ("wide", wide)]}
  names = ["fid", "kid", "kid_std", "inception_score", "inception_score_std", "precision",
           "recall", "density", "coverage"]
  assert sorted(results["good"]) == sorted(names + [f"real_{name}" for name in names])
  assert all(isinstance(value, float) for value in results["good"].values())
  for bad in ("collapsed", "wide"):
    assert results[bad]["fid"] > 5 * results["good"]["fid"]
    assert results[bad]["kid"] > 5 * results["good"]["kid"]
  # Samples too alike: real-looking (precision) but missing most of the data (recall), and the
  # other way round for samples spread too wide.
  assert results["collapsed"]["precision"] > 0.9 and results["collapsed"]["recall"] < 0.1
  assert results["wide"]["precision"] < 0.3 and results["wide"]["recall"] > 0.9
  assert min(results["good"]["precision"], results["good"]["recall"]) > 0.8
  # The floor is the same computation on two halves of the real set, whatever the fakes are.
  for name in names:
    assert results["good"][f"real_{name}"] == results["wide"][f"real_{name}"]
  features = real.reshape(400, -1)
  order = np.random.default_rng(0).permutation(400)
  np.testing.assert_allclose(results["good"]["real_fid"],
                             metrics.fid_from_features(features[order[200:]],
                                                       features[order[:200]]), rtol=1e-6)
  np.testing.assert_allclose(results["good"]["fid"],
                             metrics.fid_from_features(good.reshape(200, -1), features), rtol=1e-6)


def test_evaluate_needs_enough_images():
  real = np.zeros((30, 4, 4, 1))
  with pytest.raises(UsageError, match="at least 10 generated images, got 5"):
    evaluation.evaluate(np.zeros((5, 4, 4, 1)), real, pixel_extractor())
  with pytest.raises(UsageError, match="at least 20 real images"):
    evaluation.evaluate(real, real[:15], pixel_extractor())


def test_evaluator_reuses_real_features_and_floor():
  rng = np.random.default_rng(0)
  real, fake = rng.uniform(-1, 1, (60, 4, 4, 1)), rng.uniform(-1, 1, (40, 4, 4, 1))
  extractor, images_seen = pixel_extractor(), []

  def counting_extractor(images):
    images_seen.append(len(images))
    return extractor(images)

  evaluator = evaluation.Evaluator(real, counting_extractor)
  first, second = evaluator(fake), evaluator(fake[::-1])
  assert images_seen == [60, 40, 40]  # the real images once, then only the samples
  assert first == evaluation.evaluate(fake, real, pixel_extractor())
  assert {k: v for k, v in first.items() if k.startswith("real_")} == evaluator.floor
  np.testing.assert_allclose(second["fid"], first["fid"], rtol=1e-9)  # order-free
