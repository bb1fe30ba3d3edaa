"""Sample-based fidelity and diversity from k-nearest-neighbour balls around feature vectors.

* Precision / recall: Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall
  Metric for Assessing Generative Models", NeurIPS 2019.
* Density / coverage: Naeem, Oh, Uh, Choi, Yoo, "Reliable Fidelity and Diversity Metrics for
  Generative Models", ICML 2020.

Distances are Euclidean, in float64 on the host, computed in blocks of rows (a few million
entries, tens of MB, at a time), so 10k x 10k sets of 2048-d features fit in memory; the results
are deterministic. Those within rounding error of a ball's radius are recomputed from the
features' differences, a block at a time, so that a point on the boundary (a tie, common in
discrete or quantized features) is inside or not as the differences say: as the exact
distances, where features and differences are exact in binary (integers, multiples of powers of
1/2), and up to their rounding elsewhere (multiples of 1/10, say); equal feature vectors (a
collapsed generator's) are at distance 0 without recomputation. Each tie costs D
operations more: sets whose distances all tie, such as 2,000 distinct one-hot vectors of 2048
values, take a minute instead of a second.
"""
import itertools
from typing import Iterator, NamedTuple, Tuple

import numpy as np

from gan_jax.metrics import _blocks
from gan_jax.metrics._checks import require_finite


class _Features(NamedTuple):
  """A feature set ``(N, D)``: as given (float64), centred (for the products), the centred
  squared norms ``(N,)``, and ``(N,)`` ids, equal for equal feature vectors in either set of a
  pair."""
  given: np.ndarray
  centred: np.ndarray
  squared_norms: np.ndarray
  ids: np.ndarray


def _features(given: np.ndarray, centre: np.ndarray, ids: np.ndarray) -> _Features:
  """``given (N, D)`` centred on ``centre (D,)``. The metrics are translation-invariant; centred
  near the points, the distances |x|^2 + |y|^2 - 2 x.y lose little to cancellation when the
  points share an offset much larger than their spread."""
  centred = given - centre
  return _Features(given, centred, np.einsum("ij,ij->i", centred, centred), ids)


def _row_ids(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
  """``(N + M,)`` ids of the rows of ``real (N, D)`` and ``fake (M, D)`` taken together: the
  index of the first row equal to each (-0.0 equals 0.0), found by hashing each row's bytes.
  A row whose hash an unequal one had first keeps its own index (exact, if slower later)."""
  ids = np.empty(len(real) + len(fake), np.int64)
  first = {}  # a row's hash -> the index of the first row with it
  for index, row in enumerate(itertools.chain(real, fake)):
    row = row + 0.0  # turns -0.0 into 0.0, an equal value with other bytes
    ids[index] = first.setdefault(hash(row.tobytes()), index)
    if ids[index] != index:
      earlier = ids[index]
      earlier_row = real[earlier] if earlier < len(real) else fake[earlier - len(real)]
      if not np.array_equal(earlier_row, row):
        ids[index] = index
  return ids


def _checked_pair(real, fake) -> Tuple[np.ndarray, np.ndarray]:
  """``real (N, D)`` and ``fake (M, D)`` as float64 arrays; ValueError where they are not."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"expected real (N, D) and fake (M, D) features, got shapes {real.shape} "
                     f"and {fake.shape}")
  if not len(fake):
    raise ValueError("no fake features: the metrics need at least one")
  if not real.shape[1]:
    raise ValueError("features of dimension 0: the metrics need at least one value per sample")
  require_finite(real, "real features")
  require_finite(fake, "fake features")
  return real, fake


def _require_neighbours(k: int, features: np.ndarray, name: str) -> None:
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  if k >= len(features):
    raise ValueError(f"k={k} needs at least k + 1 = {k + 1} {name} features, got "
                     f"{len(features)}")


def _squared_distance_blocks(x: _Features, y: _Features
                             ) -> Iterator[Tuple[slice, np.ndarray, np.ndarray]]:
  """Yields ``(rows, squared, slack)`` for row blocks of x: squared Euclidean distances
  ``(len(rows), len(y))`` as |x|^2 + |y|^2 - 2 x.y of the centred features, and ``(len(rows),
  1)`` bounds on their rounding error in each row (the dot products' error bound, about
  D eps (|x|^2 + |y|^2), with room for the centring)."""
  eps = np.finfo(np.float64).eps
  largest = y.squared_norms.max(initial=0.0)
  for block in _blocks.row_blocks(len(x.given), len(y.given)):
    squared = x.squared_norms[block, None] + y.squared_norms[None, :]
    squared -= 2.0 * (x.centred[block] @ y.centred.T)
    slack = 4 * (x.given.shape[1] + 2) * eps * (x.squared_norms[block, None] + largest)
    yield block, squared, slack


def _settle(squared: np.ndarray, slack: np.ndarray, thresholds: np.ndarray, x: _Features,
            y: _Features, rows: slice) -> np.ndarray:
  """Recomputes in place the entries of ``squared`` (a block of rows of x against y) that lie
  within ``2 slack`` of ``thresholds`` (broadcast against it) from the differences of the given
  features, so that whether a point lies on a ball's boundary (a tie, common in discrete or
  quantized features) is decided by the differences, not by the rounding of the products (see
  the module's docstring). Returns the rows of the recomputed entries (one per entry)."""
  gap = squared - thresholds
  rows_near, columns_near = np.nonzero(np.abs(gap, out=gap) <= 2 * slack)
  # Equal vectors are at distance 0; the others' differences are taken a block at a time, since
  # all n^2 entries of a collapsed or quantized set can lie near a radius.
  squared[rows_near, columns_near] = 0.0
  unequal = np.flatnonzero(x.ids[rows.start + rows_near] != y.ids[columns_near])
  for part in _blocks.row_blocks(len(unequal), x.given.shape[1]):
    row, column = rows_near[unequal[part]], columns_near[unequal[part]]
    difference = x.given[rows.start + row] - y.given[column]
    squared[row, column] = np.einsum("ij,ij->i", difference, difference)
  return rows_near


def _knn_squared_radii(x: _Features, k: int) -> np.ndarray:
  """``(N,)`` squared distances from each point of ``x`` to its k-th nearest neighbour in ``x``,
  the point itself excluded (N > k). ``x`` is best centred on its own mean: the rounding error
  of the distances, and the work of settling them, grow with the centred norms."""
  radii = np.empty(len(x.given))
  for block, squared, slack in _squared_distance_blocks(x, x):
    # Column k of the sorted row is the k-th neighbour: column 0 is the point itself (distance 0).
    kth = np.argpartition(squared, k, axis=1)[:, k]
    within = np.arange(len(kth))
    # The distances within rounding error of the k-th are recomputed (_settle), the k-th among
    # them: where it was the only one, it stays the k-th; elsewhere the order is taken again.
    settled = _settle(squared, slack, squared[within, kth, None], x, x, block)
    radii[block] = squared[within, kth]
    again = np.flatnonzero(np.bincount(settled, minlength=len(kth)) > 1)
    radii[block][again] = np.partition(squared[again], k, axis=1)[:, k]
  return radii


def _fraction_inside(points: _Features, centres: _Features, squared_radii: np.ndarray) -> float:
  """Fraction of ``points`` inside (<=) at least one ball ``(centres[i], radii[i])``."""
  inside = np.zeros(len(points.given), bool)
  for block, squared, slack in _squared_distance_blocks(points, centres):
    _settle(squared, slack, squared_radii[None, :], points, centres, block)
    inside[block] = np.any(squared <= squared_radii[None, :], axis=1)
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
    ValueError: on features that are not ``(N, D)`` and ``(M, D)``, or hold NaN or inf, and
      on k < 1 or too few features for it.
  """
  real, fake = _checked_pair(real, fake)
  _require_neighbours(k, real, "real")
  _require_neighbours(k, fake, "fake")
  ids, centre = _row_ids(real, fake), real.mean(axis=0)
  real = _features(real, centre, ids[:len(real)])
  # A generator collapsed to nearly one point, far from the real mean, has fake distances below
  # the rounding error of the real centring: its radii take its own.
  fake_radii = _knn_squared_radii(_features(fake, fake.mean(axis=0), ids[len(real.given):]), k)
  fake = _features(fake, centre, ids[len(real.given):])
  precision = _fraction_inside(fake, real, _knn_squared_radii(real, k))
  recall = _fraction_inside(real, fake, fake_radii)
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
    ValueError: on features that are not ``(N, D)`` and ``(M, D)``, or hold NaN or inf, and
      on k < 1 or too few features for it.
  """
  real, fake = _checked_pair(real, fake)
  _require_neighbours(k, real, "real")
  ids, centre = _row_ids(real, fake), real.mean(axis=0)
  real, fake = _features(real, centre, ids[:len(real)]), _features(fake, centre, ids[len(real):])
  squared_radii = _knn_squared_radii(real, k)
  balls_per_fake = np.zeros(len(fake.given))
  covered = np.zeros(len(real.given), bool)
  for block, squared, slack in _squared_distance_blocks(real, fake):
    _settle(squared, slack, squared_radii[block, None], real, fake, block)
    inside = squared < squared_radii[block, None]
    balls_per_fake += inside.sum(axis=0)
    covered[block] = inside.any(axis=1)
  return float(balls_per_fake.sum() / (k * len(fake.given))), float(covered.mean())
