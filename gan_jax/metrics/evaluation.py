"""Every sample-quality metric of generated images against real images, with a real-data floor.

Metrics and their papers: FID (Heusel et al. 2017), KID (Binkowski et al. 2018), Inception Score
(Salimans et al. 2016), precision/recall (Kynkäänniemi et al. 2019), density/coverage (Naeem et
al. 2020); all on the features and class probabilities of one :class:`FeatureExtractor` (the MNIST
classifier or the FID Inception), so numbers are comparable only under the same extractor.

The floor: the same metrics with two disjoint random halves of the real set in the roles of
generated and real images (keys prefixed ``real_``). It is what a generator that samples the
data distribution itself would score with N/2 samples against N/2 references: the noise level
below which differences mean nothing. FID and precision/recall depend on the sample sizes (FID is
biased upwards by O(1/N)), and the main comparison uses the whole real set, so the floor is a
little pessimistic; KID is unbiased and its floor is centred at 0.
"""
import dataclasses
from typing import Dict

import numpy as np

from gan_jax.errors import UsageError
from gan_jax.metrics._frechet import fid_from_features
from gan_jax.metrics._inception_score import inception_score
from gan_jax.metrics._kernel import kernel_distance
from gan_jax.metrics._manifold import density_coverage, precision_recall
from gan_jax.metrics.extractor import FeatureExtractor


@dataclasses.dataclass(frozen=True)
class MetricOptions:
  """Settings of the metrics, the papers' values by default.

  Attributes:
    kid_subsets: number of KID subsets.
    kid_subset_size: KID subset size, reduced to the smaller set size when larger.
    inception_score_splits: number of Inception Score splits.
    precision_recall_k: neighbour rank of the precision/recall radii.
    density_coverage_k: neighbour rank of the density/coverage radii.
    seed: seed of the KID subsets and of the split of the real set.
  """
  kid_subsets: int = 100
  kid_subset_size: int = 1000
  inception_score_splits: int = 10
  precision_recall_k: int = 3
  density_coverage_k: int = 5
  seed: int = 0

  @property
  def minimum_samples(self) -> int:
    """The fewest images a set may have for every metric to be defined."""
    return max(self.inception_score_splits, self.precision_recall_k + 1,
               self.density_coverage_k + 1)


def metrics_from_features(fake_features, fake_probabilities, real_features,
                          options: MetricOptions = MetricOptions()) -> Dict[str, float]:
  """The metrics of one sample against a reference, from features already extracted.

  Args:
    fake_features: ``(M, D)`` features of generated images.
    fake_probabilities: ``(M, K)`` class probabilities of the same images (for the IS).
    real_features: ``(N, D)`` features of real images.
    options: metric settings.

  Returns:
    ``{"fid", "kid", "kid_std", "inception_score", "inception_score_std", "precision", "recall",
    "density", "coverage"}``, Python floats.

  Raises:
    UsageError: if M or N is below ``options.minimum_samples``.
  """
  if min(len(fake_features), len(real_features)) < options.minimum_samples:
    raise UsageError(f"the metrics need at least {options.minimum_samples} images per set, got "
                     f"{len(fake_features)} generated and {len(real_features)} real")
  kid = kernel_distance(fake_features, real_features, options.kid_subsets,
                        min(options.kid_subset_size, len(fake_features), len(real_features)),
                        options.seed)
  score = inception_score(fake_probabilities, options.inception_score_splits)
  precision, recall = precision_recall(real_features, fake_features, options.precision_recall_k)
  density, coverage = density_coverage(real_features, fake_features, options.density_coverage_k)
  return {
      "fid": fid_from_features(fake_features, real_features),
      "kid": kid.mean, "kid_std": kid.std,
      "inception_score": score.mean, "inception_score_std": score.std,
      "precision": precision, "recall": recall,
      "density": density, "coverage": coverage,
  }


class Evaluator:
  """Scores generated images against one fixed real set, e.g. every few thousand training steps.

  The real features and the real-vs-real floor (see the module docstring) are computed once,
  when the evaluator is made.

  Args:
    real_images: ``(N, H, W, C)`` real images in [-1, 1] (any size the extractor accepts).
    extractor: e.g. ``mnist_classifier.load_mnist_classifier()`` or
      ``inception.load_inception(path)``.
    options: metric settings.

  Raises:
    UsageError: with fewer than twice ``options.minimum_samples`` real images.
  """

  def __init__(self, real_images, extractor: FeatureExtractor,
               options: MetricOptions = MetricOptions()):
    if len(real_images) < 2 * options.minimum_samples:
      raise UsageError(f"evaluation needs at least {2 * options.minimum_samples} real images "
                       f"(the floor splits them in two), got {len(real_images)}")
    self.extractor, self.options = extractor, options
    self.real_features, real_probabilities = extractor(real_images)
    order = np.random.default_rng(options.seed).permutation(len(self.real_features))
    half = len(order) // 2
    reference, stand_in = order[:half], order[half:2 * half]
    floor = metrics_from_features(self.real_features[stand_in], real_probabilities[stand_in],
                                  self.real_features[reference], options)
    self.floor = {f"real_{name}": value for name, value in floor.items()}

  def __call__(self, fake_images) -> Dict[str, float]:
    """The keys of :func:`metrics_from_features` for ``fake_images`` ``(M, H, W, C)`` in [-1, 1]
    against the real set, and the same keys prefixed ``real_`` for the floor; Python floats.

    Raises:
      UsageError: with fewer than ``options.minimum_samples`` generated images.
    """
    if len(fake_images) < self.options.minimum_samples:
      raise UsageError(f"evaluation needs at least {self.options.minimum_samples} generated "
                       f"images, got {len(fake_images)}")
    results = metrics_from_features(*self.extractor(fake_images), self.real_features,
                                    self.options)
    return {**results, **self.floor}


def evaluate(fake_images, real_images, extractor: FeatureExtractor,
             options: MetricOptions = MetricOptions()) -> Dict[str, float]:
  """All metrics of generated images against real images, plus the real-vs-real floor: a
  one-off :class:`Evaluator`.

  Args:
    fake_images: ``(M, H, W, C)`` generated images in [-1, 1].
    real_images: ``(N, H', W', C')`` real images in [-1, 1] (any size the extractor accepts).
    extractor: e.g. ``mnist_classifier.load_mnist_classifier()`` or
      ``inception.load_inception(path)``.
    options: metric settings.

  Returns:
    See :meth:`Evaluator.__call__`.

  Raises:
    UsageError: with fewer than ``options.minimum_samples`` generated images or fewer than twice
      that many real images.
  """
  return Evaluator(real_images, extractor, options)(fake_images)
