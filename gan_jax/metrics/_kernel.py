"""Kernel Inception Distance: the unbiased MMD^2 of a cubic polynomial kernel (Binkowski et al.).

Binkowski, Sutherland, Arbel, Gretton, "Demystifying MMD GANs", ICLR 2018.
"""
from typing import Optional

import numpy as np

from gan_jax.metrics._types import MeanStd

_BLOCK_ENTRIES = 4_000_000  # kernel entries per block: 32 MB of float64


def _kernel_sum(x: np.ndarray, y: np.ndarray) -> float:
  """Sum of k(x_i, y_j) = (x_i . y_j / D + 1)^3 over all pairs, in blocks of rows of ``x``."""
  rows = max(1, _BLOCK_ENTRIES // len(y))
  scaled_y = y.T / x.shape[1]
  total = 0.0
  for i in range(0, len(x), rows):
    block = x[i:i + rows] @ scaled_y
    block += 1.0
    # one pass over the block, without the temporaries (and the slow pow) of block ** 3
    total += float(np.einsum("ij,ij,ij->", block, block, block))
  return total


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased estimate of MMD^2 between samples ``x (m, D)`` and ``y (n, D)``, m, n >= 2."""
  m, n, dim = len(x), len(y), x.shape[1]

  def off_diagonal_mean(z):
    diagonal = np.sum((np.einsum("ij,ij->i", z, z) / dim + 1.0) ** 3)
    return (_kernel_sum(z, z) - diagonal) / (len(z) * (len(z) - 1))

  return float(off_diagonal_mean(x) + off_diagonal_mean(y) - 2.0 * _kernel_sum(x, y) / (m * n))


def kernel_distance(features_a, features_b, num_subsets: Optional[int] = None,
                    subset_size: int = 1000, seed: int = 0) -> MeanStd:
  """Kernel Inception Distance (KID): unbiased MMD^2 with k(x, y) = (x . y / D + 1)^3.

  The estimator is unbiased, so it is centred at 0 for two samples of one distribution and can be
  slightly negative; unlike FID its expectation does not depend on the sample size. Computed in
  float64 on the host, the kernel matrices in blocks of a few million entries.

  Args:
    features_a: ``(m, D)`` features, e.g. of generated images.
    features_b: ``(n, D)`` features, e.g. of real images.
    num_subsets: None: one estimate from the full sets. An integer: the estimate on that many
      random subset pairs (each subset drawn without replacement, as in the reference code of
      Binkowski et al., who use 100 subsets of 1000), averaged.
    subset_size: samples per subset, at most ``min(m, n)``; ignored when ``num_subsets`` is None.
    seed: seed of the subset draws (``numpy.random.default_rng``).

  Returns:
    ``MeanStd(mean, std)`` of Python floats: the mean and standard deviation of the estimates over
    the subsets; with ``num_subsets=None`` the full-set estimate and 0.0.

  Raises:
    ValueError: on feature arrays that are not ``(N, D)`` with the same D and N >= 2, or subsets
      larger than a set.
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f"expected features (m, D) and (n, D) with m, n >= 2, got {a.shape} and "
                     f"{b.shape}")
  if num_subsets is None:
    return MeanStd(_unbiased_mmd2(a, b), 0.0)
  if not 2 <= subset_size <= min(len(a), len(b)):
    raise ValueError(f"subset_size={subset_size} must be in [2, {min(len(a), len(b))}], the "
                     "smaller set size")
  rng = np.random.default_rng(seed)
  estimates = [
      _unbiased_mmd2(a[rng.choice(len(a), subset_size, replace=False)],
                     b[rng.choice(len(b), subset_size, replace=False)])
      for _ in range(num_subsets)]
  return MeanStd(float(np.mean(estimates)), float(np.std(estimates)))
