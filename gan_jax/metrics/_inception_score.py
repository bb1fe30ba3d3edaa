"""Inception Score (Salimans et al. 2016) from classifier probabilities.

Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen, "Improved Techniques for Training GANs",
NeurIPS 2016.
"""
import numpy as np
from scipy import special

from gan_jax.metrics._checks import require_finite
from gan_jax.metrics._types import MeanStd


def inception_score(class_probs, num_splits: int = 10) -> MeanStd:
  """exp(E_x KL(p(y|x) || p(y))), averaged over splits of the samples.

  As in the original code, the samples are cut into ``num_splits`` consecutive parts
  ``[i N // num_splits, (i + 1) N // num_splits)`` (shuffle samples that are sorted by class);
  in each, p(y) is the mean of p(y|x) over the part. KL terms use ``scipy.special.rel_entr``
  (0 log 0 = 0), so one-hot and other zero probabilities are exact.
  The score lies in [1, K]: 1 when every sample gets the same prediction, K for confident
  predictions spread evenly over the K classes.

  Args:
    class_probs: ``(N, K)`` class probabilities p(y|x), rows summing to 1, N >= num_splits.
    num_splits: number of parts (10 in the paper).

  Returns:
    ``MeanStd(mean, std)`` of the per-split scores, Python floats.

  Raises:
    ValueError: on num_splits < 1, probabilities that are not ``(N, K)`` with N >= num_splits,
      not finite, or not rows of probabilities (negative, or summing to other than 1 by more
      than 1e-3).
  """
  probs = np.asarray(class_probs, np.float64)
  if num_splits < 1:
    raise ValueError(f"num_splits must be at least 1, got {num_splits}")
  if probs.ndim != 2 or num_splits > len(probs):
    raise ValueError(f"class_probs must be (N, K) with N >= num_splits={num_splits}, got shape "
                     f"{probs.shape}")
  require_finite(probs, "class_probs")
  row_sums = probs.sum(axis=1)
  if probs.min() < 0 or np.abs(row_sums - 1).max() > 1e-3:
    raise ValueError(f"class_probs must be probabilities: >= 0, rows summing to 1; got values "
                     f"down to {probs.min():.3g} and row sums in [{row_sums.min():.4g}, "
                     f"{row_sums.max():.4g}] (pass softmax(logits), not logits)")
  bounds = np.arange(1, num_splits) * len(probs) // num_splits
  scores = []
  for part in np.split(probs, bounds):
    marginal = part.mean(axis=0, keepdims=True)
    scores.append(np.exp(special.rel_entr(part, marginal).sum(axis=1).mean()))
  return MeanStd(float(np.mean(scores)), float(np.std(scores)))
