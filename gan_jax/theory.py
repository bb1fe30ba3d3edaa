"""Exact GAN quantities on densities sampled on a uniform grid.

Densities are arrays of values p(x) at the cell centres of a uniform grid of any number of
dimensions (any array shape); ``dx`` is the volume of one cell, so ``sum(p) * dx`` approximates
the integral of p. All logarithms are natural. Zero densities are handled with the conventions
0 log 0 = 0 and 0 log(0/0) = 0, so no function returns NaN; ``kl_divergence(p, q)`` is ``inf``
where p has mass and q has none, as it should be.

The identities below hold for densities that integrate to one on the grid:

* for a fixed generator, the discriminator maximizing V(D, G) is D* = p_data / (p_data + p_g);
* V(D*, G) = -log 4 + 2 JSD(p_data || p_g), so training G against D* minimizes the JSD;
* 0 <= JSD <= log 2, with 0 iff the densities match and log 2 iff their supports are disjoint.
"""
import jax
import jax.numpy as jnp
from jax.scipy import special

Array = jax.Array


def optimal_discriminator(p_data: Array, p_g: Array) -> Array:
  """D*(x) = p_data(x) / (p_data(x) + p_g(x)), and 1/2 where both densities are 0.

  Args:
    p_data: data density on the grid, any shape.
    p_g: generator density, same shape.

  Returns:
    D*, same shape, values in [0, 1].
  """
  total = p_data + p_g
  safe_total = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, p_data / safe_total, 0.5)


def kl_divergence(p: Array, q: Array, dx: float) -> Array:
  """KL(p || q) = integral of p log(p / q).

  Args:
    p: density on the grid, any shape.
    q: density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar >= 0 for normalized densities; ``inf`` if p has mass where q has none.
  """
  return jnp.sum(special.rel_entr(p, q)) * dx


def js_divergence(p: Array, q: Array, dx: float) -> Array:
  """Jensen-Shannon divergence: KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2.

  Args:
    p: density on the grid, any shape.
    q: density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar in [0, log 2] for normalized densities; symmetric in p and q.
  """
  m = 0.5 * (p + q)
  return 0.5 * kl_divergence(p, m, dx) + 0.5 * kl_divergence(q, m, dx)


def value(d: Array, p_data: Array, p_g: Array, dx: float) -> Array:
  """V(D, G) = integral of p_data log D + p_g log(1 - D), for a discriminator given on the grid.

  Args:
    d: discriminator output D(x) in [0, 1] on the grid, any shape.
    p_data: data density, same shape.
    p_g: generator density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar <= 0; ``-inf`` if D is 0 where the data has mass (or 1 where p_g has mass).
  """
  return jnp.sum(special.xlogy(p_data, d) + special.xlogy(p_g, 1.0 - d)) * dx


def optimal_value(p_data: Array, p_g: Array, dx: float) -> Array:
  """V(D*, G): the value of the game against the optimal discriminator.

  Equals -log 4 + 2 JSD(p_data || p_g) for normalized densities; -log 4 iff p_g = p_data.

  Args:
    p_data: data density on the grid, any shape.
    p_g: generator density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar in [-log 4, 0].
  """
  total = p_data + p_g
  return jnp.sum(_times_log_share(p_data, total) + _times_log_share(p_g, total)) * dx


def _times_log_share(p: Array, total: Array) -> Array:
  """``p log(p / total)``, and 0 where p is 0, for ``total >= p``.

  Written as a difference of logarithms rather than through D* = p / total: the derivative of
  that quotient divides by total squared, which underflows to 0 in the tails of a density
  (1e-27 squared), and ``jax.grad`` would return inf there. Both branches of the ``where`` stay
  finite, so their gradients do too.
  """
  has_mass = p > 0
  safe_p = jnp.where(has_mass, p, 1.0)
  safe_total = jnp.where(has_mass, total, 1.0)
  return jnp.where(has_mass, p * (jnp.log(safe_p) - jnp.log(safe_total)), 0.0)
