"""Sample-based fidelity and diversity from k-nearest-neighbour balls around feature vectors.

* Precision / recall: Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall
  Metric for Assessing Generative Models", NeurIPS 2019.
* Density / coverage: Naeem, Oh, Uh, Choi, Yoo, "Reliable Fidelity and Diversity Metrics for
  Generative Models", ICML 2020.

Distances are Euclidean, in float64 on the host, computed in blocks of rows (a few million
entries, tens of MB, at a time), so 10k x 10k sets of 2048-d features fit in memory; the results
are deterministic.
"""
from typing import Iterator, Tuple

import numpy as np

from gan_jax.metrics import _blocks
from gan_jax.metrics._checks import require_finite


def _as_feature_pair(real, fake) -> Tuple[np.ndarray, np.ndarray]:
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"expected real (N, D) and fake (M, D) features, got shapes {real.shape} "
                     f"and {fake.shape}")
  if not len(fake):
    raise ValueError("no fake features: the metrics need at least one")
  require_finite(real, "real features")
  require_finite(fake, "fake features")
  # The metrics are translation-invariant; centred, the distances |x|^2 + |y|^2 - 2 x.y lose
  # nothing to cancellation when features share an offset much larger than their spread.
  centre = real.mean(axis=0) if len(real) else 0.0  # none: the k-NN check refuses them next
  return real - centre, fake - centre


def _distance_blocks(x: np.ndarray, y: np.ndarray) -> Iterator[Tuple[slice, np.ndarray]]:
  """Yields ``(rows, distances)``: Euclidean distances ``(len(rows), len(y))`` for row blocks of x.

  Squared distances are |x|^2 + |y|^2 - 2 x.y, clipped at 0 against cancellation.
  """
  x_sq, y_sq = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
  for block in _blocks.row_blocks(len(x), len(y)):
    squared = x_sq[block, None] + y_sq[None, :] - 2.0 * (x[block] @ y.T)
    yield block, np.sqrt(np.maximum(squared, 0.0))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
  """``(N,)`` distances from each point of ``x (N, D)`` to its k-th nearest neighbour in ``x``,
  the point itself excluded."""
  if not 1 <= k < len(x):
    raise ValueError(f"k={k} needs at least k + 1 = {k + 1} points, got {len(x)}")
  radii = np.empty(len(x))
  for block, distances in _distance_blocks(x, x):
    # Column k of the sorted row is the k-th neighbour: column 0 is the point itself (distance 0).
    radii[block] = np.partition(distances, k, axis=1)[:, k]
  return radii


def _fraction_inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
  """Fraction of ``points`` inside (<=) at least one ball ``(centres[i], radii[i])``."""
  inside = np.zeros(len(points), bool)
  for block, distances in _distance_blocks(points, centres):
    inside[block] = np.any(distances <= radii[None, :], axis=1)
  return float(inside.mean())


def precision_recall(real, fake, k: int = 3) -> Tuple[float, float]:
  """Improved precision and recall of Kynkäänniemi et al. 2019.

  Each set's manifold is the union of balls around its points with radius the distance to the
  k-th nearest neighbour in the same set. Precision is the fraction of fake points inside the real
  manifold (fidelity), recall the fraction of real points inside the fake manifold (diversity);
  points on a ball's boundary count as inside, as in the authors' code.

  Args:
    real: ``(N, D)`` features of real images, N > k.
    fake: ``(M, D)`` features of generated images, M > k.
    k: neighbour rank of the radii (3 in the paper).

  Returns:
    ``(precision, recall)``, Python floats in [0, 1].

  Raises:
    ValueError: on features that are not ``(N, D)`` and ``(M, D)``, or hold NaN or inf.
  """
  real, fake = _as_feature_pair(real, fake)
  precision = _fraction_inside(fake, real, _knn_radii(real, k))
  recall = _fraction_inside(real, fake, _knn_radii(fake, k))
  return precision, recall


def density_coverage(real, fake, k: int = 5) -> Tuple[float, float]:
  """Density and coverage of Naeem et al. 2020, from k-NN balls around the real points only.

  density = 1 / (k M) sum_j sum_i 1[fake_j in B(real_i, r_i)], which counts how many real balls
  hold each fake point (about 1 when the distributions match, above 1 for fakes crowding dense
  real regions; unbounded); coverage = 1 / N sum_i 1[some fake_j in B(real_i, r_i)], the fraction
  of real balls that hold a fake point, in [0, 1]. ``r_i`` is the distance from real_i to its k-th
  nearest real neighbour; inside means strictly closer, as in the authors' code.

  Args:
    real: ``(N, D)`` features of real images, N > k.
    fake: ``(M, D)`` features of generated images.
    k: neighbour rank of the radii (5 in the paper).

  Returns:
    ``(density, coverage)``, Python floats.

  Raises:
    ValueError: on features that are not ``(N, D)`` and ``(M, D)``, or hold NaN or inf.
  """
  real, fake = _as_feature_pair(real, fake)
  radii = _knn_radii(real, k)
  balls_per_fake = np.zeros(len(fake))
  covered = np.zeros(len(real), bool)
  for block, distances in _distance_blocks(real, fake):
    inside = distances < radii[block, None]
    balls_per_fake += inside.sum(axis=0)
    covered[block] = inside.any(axis=1)
  return float(balls_per_fake.sum() / (k * len(fake))), float(covered.mean())
