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
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
LOG2 = float(np.log(2.0))


def _same_shape_arrays(**arrays: Array) -> Tuple[Array, ...]:
  """The arrays (values on one grid, also given as lists or of integers) as float jax arrays,
  in order; ValueError unless they have one shape (numpy would broadcast a ``(n,)`` and an
  ``(n, 1)`` density into an ``(n, n)`` grid without a word)."""
  arrays = {name: jnp.asarray(a) for name, a in arrays.items()}
  arrays = {name: a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(float)
            for name, a in arrays.items()}  # the default float: float32, float64 with x64
  shapes = {name: a.shape for name, a in arrays.items()}
  if len(set(shapes.values())) > 1:
    raise ValueError("values on one grid must have one shape, got " + ", ".join(
        f"{name} {shape}" for name, shape in shapes.items()))
  return tuple(arrays.values())


def _both_positive(p: Array, q: Array):
  """``(both, safe_p, safe_q)``: where both are positive, and p and q there (1 elsewhere, so that
  functions of them and their gradients stay finite in the branch a ``where`` discards)."""
  both = (p > 0) & (q > 0)
  return both, jnp.where(both, p, 1.0), jnp.where(both, q, 1.0)


def _log_shares(p: Array, q: Array):
  """``(log(p / (p + q)), log(q / (p + q)))`` for positive p and q: log-sigmoids of the log ratio,
  accurate also where one share is tiny."""
  log_ratio = jnp.log(p) - jnp.log(q)
  return jax.nn.log_sigmoid(log_ratio), jax.nn.log_sigmoid(-log_ratio)


def optimal_logits(p_data: Array, p_g: Array) -> Array:
  """The logits of D*: log p_data(x) - log p_g(x); +inf where only the data has mass, -inf where
  only the generator does, 0 where neither.

  D* itself may round to 1 in float32 where the data density is 2^24 (1.7e7) times the
  generator's, and does from 2^25 (3.4e7); log(1 - D*) loses digits well before. The logits do
  not, so ``value_of_logits`` stays finite and accurate with them.

  Args:
    p_data: data density on the grid, any shape.
    p_g: generator density, same shape.

  Returns:
    Logits, same shape.
  """
  p_data, p_g = _same_shape_arrays(p_data=p_data, p_g=p_g)
  both, p, q = _both_positive(p_data, p_g)
  one_sided = jnp.where(p_data > 0, jnp.inf, jnp.where(p_g > 0, -jnp.inf, 0.0))
  return jnp.where(both, jnp.log(p) - jnp.log(q), one_sided)


def optimal_discriminator(p_data: Array, p_g: Array) -> Array:
  """D*(x) = p_data(x) / (p_data(x) + p_g(x)), and 1/2 where both densities are 0.

  Differentiable where both densities are positive, also in their tails (``_share``).

  Args:
    p_data: data density on the grid, any shape.
    p_g: generator density, same shape.

  Returns:
    D*, same shape, values in [0, 1].
  """
  p_data, p_g = _same_shape_arrays(p_data=p_data, p_g=p_g)
  both, p, q = _both_positive(p_data, p_g)
  return jnp.where(both, _share(p, q), jnp.where(p_data > 0, 1.0, jnp.where(p_g > 0, 0.0, 0.5)))


# The pointwise functions below have their derivatives written out (custom JVPs): differentiating
# their formulas would divide by (p + q)^2, which underflows to 0 in the tails of a density
# (1e-27 squared), or multiply a huge by a tiny factor that float32 flushes to 0.


@jax.custom_jvp
def _share(p: Array, q: Array) -> Array:
  """p / (p + q) for positive p and q."""
  return p / (p + q)


@_share.defjvp
def _share_jvp(primals, tangents):
  (p, q), (dp, dq) = primals, tangents
  total = p + q
  share_p, share_q = p / total, q / total
  return share_p, (share_q * dp - share_p * dq) / total  # (q dp - p dq) / (p + q)^2


@jax.custom_jvp
def _optimal_value_cell(p: Array, q: Array) -> Array:
  """p log(p / (p + q)) + q log(q / (p + q)) for positive p and q: V(D*, G) in one cell."""
  log_share_p, log_share_q = _log_shares(p, q)
  return p * log_share_p + q * log_share_q


@_optimal_value_cell.defjvp
def _optimal_value_cell_jvp(primals, tangents):
  (p, q), (dp, dq) = primals, tangents
  log_share_p, log_share_q = _log_shares(p, q)
  # the terms through the shares cancel: p d(log share_p) + q d(log share_q) = 0
  return (p * log_share_p + q * log_share_q, log_share_p * dp + log_share_q * dq)


@jax.custom_jvp
def _four_jsd_cell(p: Array, q: Array) -> Array:
  """4 times the JSD in one cell, 2 (p log(p / m) + q log(q / m)) with m = (p + q) / 2, for
  positive p and q: (p + q) times ``_jsd_bracket`` of half their log ratio."""
  return (p + q) * _jsd_bracket(0.5 * (jnp.log(p) - jnp.log(q)))


@_four_jsd_cell.defjvp
def _four_jsd_cell_jvp(primals, tangents):
  (p, q), (dp, dq) = primals, tangents
  log_share_p, log_share_q = _log_shares(p, q)
  # d/dp = 2 log(p / m) = 2 (log 2 + log share_p), and the same for q
  return (_four_jsd_cell(p, q),
          2.0 * ((LOG2 + log_share_p) * dp + (LOG2 + log_share_q) * dq))


def kl_divergence(p: Array, q: Array, dx: float) -> Array:
  """KL(p || q) = integral of p log(p / q).

  With r = (q - p) / p, each cell is p (r - log(1 + r)), which is never negative, minus q - p;
  the sum of the first terms plus that of p - q is the KL. Summing p log(p / q) itself would
  cancel to noise (or a negative number) when p and q nearly agree: its cells are about as large
  as the difference of the densities, their sum about its square (``_kl_cell``).

  Args:
    p: density on the grid, any shape.
    q: density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar >= 0 for normalized densities (up to the rounding of their masses' difference);
    ``inf`` if p has mass where q has none. A q that underflowed below the smallest normal
    number (float32: 1.2e-38; float16 is taken in float32) where p did not counts as none, as
    a q of 0 in ``scipy.special.rel_entr``: in float32 a unit Gaussian underflows about 13
    standard deviations out, so KL(N(0, 1) || N(1, 1)) on a grid over [-13, 13] is ``inf``. End
    the grid where q is still a normal number, or compute in float64 (``jax_enable_x64``).
  """
  p, q = _same_shape_arrays(p=p, q=q)
  # Below the smallest normal number, XLA's CPU log reads a number as 0 or not, depending on
  # the array's length: cells where p is there hold no KL, and q there counts as 0.
  has_mass = p >= _smallest_normal_of_log(p)
  q = jnp.where((q >= 0) & (q < _smallest_normal_of_log(q)), 0.0, q)  # NaN, q < 0 stay NaN
  safe_p = jnp.where(has_mass, p, 1.0)
  safe_q = jnp.where(has_mass, q, 1.0)
  # where p is 0, p log(p / q) is 0: the first term must then be q, to cancel the second's -q
  cells = jnp.where(has_mass, _kl_cell(safe_p, safe_q), q)
  return (jnp.sum(cells) + jnp.sum(p - q)) * dx


def _smallest_normal_of_log(x: Array) -> float:
  """The smallest normal number of the type XLA takes the log of ``x`` in: float32 for float16
  and bfloat16, whose subnormals are normal there."""
  return jnp.finfo(jnp.promote_types(x.dtype, jnp.float32)).tiny


def _kl_cell(p: Array, q: Array) -> Array:
  """p (r - log(1 + r)) with r = (q - p) / p, for p > 0 (inf where q is 0), accurate to a few
  ulps. Where |r| is small, by the series r^2/2 - r^3/3 + ... (the closed form loses its leading
  terms to cancellation); elsewhere as (q - p) + p (log p - log q), which cannot overflow."""
  cut = 0.1 if jnp.finfo(p.dtype).eps > 1e-10 else 0.01  # the series' error: about cut^8 / 5
  small = jnp.abs(q - p) < cut * p
  # each branch sees 1s where the other is taken, so that its unused gradient stays finite
  near_p, near_q = jnp.where(small, p, 1.0), jnp.where(small, q, 1.0)
  far_p, far_q = jnp.where(small, 1.0, p), jnp.where(small, 1.0, q)
  r = (near_q - near_p) / near_p
  series = r * r * (1 / 2 + r * (-1 / 3 + r * (1 / 4 + r * (-1 / 5 + r * (1 / 6 + r * (
      -1 / 7 + r * (1 / 8 - r / 9)))))))
  return jnp.where(small, near_p * series,
                   (far_q - far_p) + far_p * (jnp.log(far_p) - jnp.log(far_q)))


def js_divergence(p: Array, q: Array, dx: float) -> Array:
  """Jensen-Shannon divergence: KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2.

  With r = (p - q) / (p + q), the integrand is (p + q) / 4 times
  (1 + r) log(1 + r) + (1 - r) log(1 - r), evaluated without forming m (whose halving turns
  densities near float32's smallest normal number into 0, which made KL(p || m) infinite) and
  without the cancellation of p log p - p log m when p and q nearly agree (``_jsd_bracket``).

  Args:
    p: density on the grid, any shape.
    q: density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar in [0, log 2] for normalized densities, up to the rounding of their sums (disjoint
    supports can give log 2 plus a float32 ulp); symmetric in p and q.
  """
  p, q = _same_shape_arrays(p=p, q=q)
  both, safe_p, safe_q = _both_positive(p, q)
  # where one density vanishes, r = +-1 and the bracket is 2 log 2; the quarter is taken after
  # the sum, so that cells near float32's smallest normal number do not flush to 0 first
  cells = jnp.where(both, _four_jsd_cell(safe_p, safe_q), 2.0 * LOG2 * (p + q))
  return 0.25 * jnp.sum(cells) * dx


def _jsd_bracket(u: Array) -> Array:
  """(1 + r) log(1 + r) + (1 - r) log(1 - r) for r = tanh(u) (u: half the log ratio of the two
  densities), accurate to a few float32 ulps for every finite u.

  It equals 2 r u + log(1 - r^2). For |u| < 1 that form is used as it stands (about u^2 for
  small u); above, 1 - r^2 would round off, so it is rewritten with w = exp(-2 |u|) as
  2 log 2 - 4 |u| w / (1 + w) - 2 log(1 + w).
  """
  a = jnp.abs(u)
  small = a < 1.0
  u_small = jnp.where(small, u, 0.0)  # keeps the unused branch and its gradient finite
  r = jnp.tanh(u_small)
  w = jnp.exp(-2.0 * a)
  return jnp.where(small, 2.0 * r * u_small + jnp.log1p(-r * r),
                   2.0 * LOG2 - 4.0 * a * w / (1.0 + w) - 2.0 * jnp.log1p(w))


def _times_log(p: Array, log_d: Array) -> Array:
  """``p * log_d``, and 0 where p is 0 (where ``log_d`` may be -inf), with finite gradients."""
  has_mass = p > 0
  return jnp.where(has_mass, p * jnp.where(has_mass, log_d, 0.0), 0.0)


def value(d: Array, p_data: Array, p_g: Array, dx: float) -> Array:
  """V(D, G) = integral of p_data log D + p_g log(1 - D), for a discriminator given on the grid.

  Where D rounds to 1 (float32: logits above about 17) use ``value_of_logits``.

  Args:
    d: discriminator output D(x) in [0, 1] on the grid, any shape.
    p_data: data density, same shape.
    p_g: generator density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar <= 0; ``-inf`` if D is 0 where the data has mass (or 1 where p_g has mass).
  """
  d, p_data, p_g = _same_shape_arrays(d=d, p_data=p_data, p_g=p_g)
  safe = lambda p, x: jnp.log(jnp.where(p > 0, x, 1.0))  # no 0 / 0 in the gradient where p is 0
  return jnp.sum(_times_log(p_data, safe(p_data, d)) + _times_log(p_g, safe(p_g, 1.0 - d))) * dx


def value_of_logits(logits: Array, p_data: Array, p_g: Array, dx: float) -> Array:
  """V(D, G) for D = sigmoid(logits): log D and log(1 - D) are the log-sigmoids of +-logits, so
  the value stays exact where D would round to 0 or 1.

  Args:
    logits: discriminator logits on the grid, any shape (may be +-inf, as ``optimal_logits``).
    p_data: data density, same shape.
    p_g: generator density, same shape.
    dx: volume of one grid cell.

  Returns:
    Scalar <= 0; ``-inf`` if a logit is -inf where the data has mass (or +inf where p_g has).
  """
  logits, p_data, p_g = _same_shape_arrays(logits=logits, p_data=p_data, p_g=p_g)
  return jnp.sum(_times_log(p_data, jax.nn.log_sigmoid(logits))
                 + _times_log(p_g, jax.nn.log_sigmoid(-logits))) * dx


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
  p_data, p_g = _same_shape_arrays(p_data=p_data, p_g=p_g)
  both, p, q = _both_positive(p_data, p_g)
  # where one density vanishes, D* is 0 or 1 and the cell adds p log 1 = 0
  return jnp.sum(jnp.where(both, _optimal_value_cell(p, q), 0.0)) * dx
