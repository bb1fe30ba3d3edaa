"""Sample-quality metrics: pure functions on feature arrays and samples.

The functions here take features (or class probabilities) as arrays and return Python floats,
computed in float64 on the host. The networks that produce features are submodules, imported on
their own: ``metrics.mnist_classifier`` (a small MNIST CNN with shipped weights),
``metrics.inception`` (the FID Inception-v3, weights from a file), and ``metrics.evaluation``,
which runs an extractor on images and reports every metric.
"""
from gan_jax.metrics._frechet import feature_statistics, fid_from_features, frechet_distance
from gan_jax.metrics._inception_score import inception_score
from gan_jax.metrics._kernel import kernel_distance
from gan_jax.metrics._manifold import density_coverage, precision_recall
from gan_jax.metrics._types import MeanStd

__all__ = [
    "MeanStd",
    "density_coverage",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "precision_recall",
]
