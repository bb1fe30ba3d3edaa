"""Mode coverage on the 2-D mixtures: the protocol of VEEGAN (Srivastava et al. 2017) and PacGAN
(Lin et al. 2018, Table 1).

A sample belongs to the mode nearest to it in units of each mode's standard deviation, and is
*high quality* if it lies within ``threshold`` (3) of them; the *reverse KL* is KL(q || uniform),
q the histogram of the high-quality samples over the modes. The papers draw 2,500 samples per
trial. A mode is *covered* when at least ``min_count`` high-quality samples fall on it: 20 here,
stricter than PacGAN's released code, which counts a mode with a single one (``min_count=1``
gives its count), so the modes counted here are never more than theirs. With 20, n samples can
show at most n / 20 modes. A perfect sampler of isotropic 2-D Gaussians puts
1 - exp(-9/2) = 98.9% of its samples within 3 standard deviations, covers every mode, and its
reverse KL is only the noise of the histogram, about (K - 1) / (2 n) for K modes and n samples.

Computed in float64 on the host, like the other metrics; samples of several seeds are scored one
seed at a time.
"""
from typing import Dict, Union

import numpy as np

THRESHOLD_STDS = 3.0
MIN_COUNT = 20
NUM_SAMPLES = 2500


def high_quality_counts(samples, means, stds, threshold: float = THRESHOLD_STDS) -> np.ndarray:
  """Number of high-quality samples on each mode.

  Args:
    samples: ``(n, dim)``.
    means: mode centres ``(num_modes, dim)``.
    stds: per-mode standard deviations ``(num_modes,)``.
    threshold: a sample closer than ``threshold`` standard deviations to its nearest mode (in
      those units) is high quality.

  Returns:
    int64 counts ``(num_modes,)``; their sum is the number of high-quality samples.
  """
  samples, means = np.asarray(samples, np.float64), np.asarray(means, np.float64)
  if samples.ndim != 2 or means.ndim != 2 or samples.shape[1] != means.shape[1]:
    raise ValueError(f"expected samples (n, dim) and means (num_modes, dim), got shapes "
                     f"{samples.shape} and {means.shape}")
  if not len(samples):
    raise ValueError("no samples to score")
  stds = np.asarray(stds, np.float64)
  if stds.shape != (len(means),):
    raise ValueError(f"expected one std per mode, ({len(means)},), got shape {stds.shape}")
  # in standard deviations of each mode, as PacGAN's code measures (the same nearest mode for
  # equal stds)
  distances = (np.linalg.norm(samples[:, None, :] - means[None], axis=-1)
               / stds)  # (n, num_modes)
  nearest = np.argmin(distances, axis=1)
  high_quality = distances[np.arange(len(samples)), nearest] < threshold
  return np.bincount(nearest[high_quality], minlength=len(means))


def mode_metrics(samples, means, stds, threshold: float = THRESHOLD_STDS,
                 min_count: int = MIN_COUNT) -> Dict[str, Union[int, float]]:
  """Modes covered, fraction of high-quality samples and reverse KL, as in PacGAN Table 1.

  Args:
    samples: ``(n, dim)``; the protocol draws n = 2,500.
    means: centres ``(num_modes, dim)`` of modes of equal weight.
    stds: per-mode standard deviations ``(num_modes,)``.
    threshold: high-quality radius in standard deviations.
    min_count: high-quality samples a mode needs to count as covered.

  Returns:
    ``modes`` (int, modes covered), ``high_quality`` (float in [0, 1]) and ``reverse_kl`` (float
    >= 0; NaN when no sample is high quality, where the histogram is undefined).
  """
  counts = high_quality_counts(samples, means, stds, threshold)
  total = counts.sum()
  histogram = counts[counts > 0] / total  # empty modes add 0 log 0 = 0
  reverse_kl = float(np.sum(histogram * np.log(histogram * len(counts)))) if total else np.nan
  return {"modes": int(np.sum(counts >= min_count)),
          "high_quality": float(total / len(samples)),
          "reverse_kl": reverse_kl}
