"""Toy target distributions: isotropic Gaussian mixtures with ``sample`` and ``log_prob``.

The 2-D benchmarks are those of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018):
``ring8``, eight modes evenly spaced on the unit circle with std 0.01, and ``grid25``, modes at
{-4, -2, 0, 2, 4}^2 with std 0.05; every mode has the same weight.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """A mixture of isotropic Gaussians in d dimensions.

  Attributes:
    means: mode centres, ``(num_modes, dim)``.
    stds: per-mode standard deviation, ``(num_modes,)``.
    weights: mixture weights summing to one, ``(num_modes,)``.
  """
  means: np.ndarray
  stds: np.ndarray
  weights: np.ndarray

  def __post_init__(self):
    if self.means.ndim != 2:
      raise ValueError(f"means must be (num_modes, dim), got shape {self.means.shape}")
    if self.stds.shape != self.means.shape[:1] or self.weights.shape != self.means.shape[:1]:
      raise ValueError("stds and weights need one entry per mode")
    if not np.all(self.stds > 0):
      raise ValueError(f"stds must be positive, got {self.stds}")
    if not (np.all(self.weights >= 0) and abs(float(np.sum(self.weights)) - 1.0) < 1e-6):
      raise ValueError(f"weights must be non-negative and sum to one, got {self.weights} (the "
                       "mixture() function normalizes them)")

  @property
  def num_modes(self) -> int:
    return self.means.shape[0]

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def sample(self, key: Array, n: int) -> Array:
    """``n`` independent samples, float32 ``(n, dim)``."""
    mode_key, noise_key = jax.random.split(key)
    modes = jax.random.choice(mode_key, self.num_modes, (n,), p=jnp.asarray(self.weights))
    noise = jax.random.normal(noise_key, (n, self.dim))
    return (jnp.asarray(self.means, jnp.float32)[modes]
            + jnp.asarray(self.stds, jnp.float32)[modes, None] * noise)

  def log_prob(self, x: Array) -> Array:
    """Log density at ``x``, ``(n, dim) -> (n,)``."""
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != self.dim:
      raise ValueError(f"log_prob takes points of shape (n, {self.dim}), got {jnp.shape(x)}")
    means, stds = jnp.asarray(self.means), jnp.asarray(self.stds)
    sq_dist = jnp.sum(jnp.square(x[:, None, :] - means[None]), axis=-1)  # (n, num_modes)
    log_norm = -self.dim * (jnp.log(stds) + 0.5 * jnp.log(2 * jnp.pi))
    log_components = log_norm - 0.5 * sq_dist / jnp.square(stds)
    return jax.scipy.special.logsumexp(log_components, axis=-1, b=jnp.asarray(self.weights))


def mixture(means, stds, weights=None) -> GaussianMixture:
  """A mixture from lists: ``means`` ``(K,)`` (1-D) or ``(K, dim)``, ``stds`` scalar or ``(K,)``.

  Weights default to uniform and are normalized to sum to one.
  """
  means = np.asarray(means, np.float64)
  if means.ndim == 1:
    means = means[:, None]
  stds = np.broadcast_to(np.asarray(stds, np.float64), means.shape[:1]).copy()
  weights = np.ones(means.shape[0]) if weights is None else np.asarray(weights, np.float64)
  if not weights.sum() > 0:
    raise ValueError(f"weights must be non-negative with a positive sum, got {weights}")
  return GaussianMixture(means, stds, weights / weights.sum())


def ring(num_modes: int = 8, radius: float = 1.0, std: float = 0.01) -> GaussianMixture:
  """``num_modes`` Gaussians evenly spaced on a circle (VEEGAN/PacGAN ``ring8`` by default)."""
  angles = 2 * np.pi * np.arange(num_modes) / num_modes
  return mixture(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), std)


def grid(side: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
  """``side`` x ``side`` Gaussians on a square grid centred at 0 (``grid25`` by default)."""
  coords = spacing * (np.arange(side) - (side - 1) / 2)
  xs, ys = np.meshgrid(coords, coords)
  return mixture(np.stack([xs.ravel(), ys.ravel()], axis=1), std)


TOY_DATASETS = {"ring8": ring, "grid25": grid}


def get_toy_dataset(name: str) -> GaussianMixture:
  """The named 2-D benchmark distribution; ValueError naming the choices otherwise."""
  if name not in TOY_DATASETS:
    raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}")
  return TOY_DATASETS[name]()
