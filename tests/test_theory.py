"""GAN theory on grids: the identities of Goodfellow et al. 2014, checked numerically."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import rel_entr

from gan_jax import distributions, theory

LOG2 = np.log(2.0)
GRID = np.linspace(-6.0, 6.0, 2401)
DX = GRID[1] - GRID[0]


def float64_jsd(p, q, dx) -> float:
  """The Jensen-Shannon divergence in float64, 0 log 0 = 0 (scipy's rel_entr): a reference."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  m = 0.5 * (p + q)
  return 0.5 * dx * float(rel_entr(p, m).sum() + rel_entr(q, m).sum())


def density(mixture):
  p = np.exp(np.asarray(mixture.log_prob(jnp.asarray(GRID[:, None], jnp.float32)), np.float64))
  return p / (p.sum() * DX)  # normalized on the grid


P = density(distributions.mixture([-2.0, 1.0], [0.5, 0.8], [0.3, 0.7]))
Q = density(distributions.mixture([0.0, 2.5], [1.0, 0.4]))


def random_normalized_densities(seed, shape=(30, 40)):
  rng = np.random.default_rng(seed)
  p, q = rng.random(shape) ** 3, rng.random(shape) ** 3
  p[rng.random(shape) < 0.3] = 0.0  # holes: zero density must not give NaN
  dx = 0.05
  return p / (p.sum() * dx), q / (q.sum() * dx), dx


def test_jsd_symmetric_and_zero_for_equal_densities():
  np.testing.assert_allclose(theory.js_divergence(P, Q, DX), theory.js_divergence(Q, P, DX),
                             rtol=1e-6)
  np.testing.assert_allclose(theory.js_divergence(P, P, DX), 0.0, atol=1e-7)


def test_jsd_is_log_2_for_disjoint_supports():
  p = np.where(GRID < 0, 1.0, 0.0)
  q = np.where(GRID >= 0, 1.0, 0.0)
  p, q = p / (p.sum() * DX), q / (q.sum() * DX)
  np.testing.assert_allclose(theory.js_divergence(p, q, DX), LOG2, rtol=1e-6)


def test_jsd_on_random_mixtures_equals_a_float64_reference_and_is_bounded():
  for seed in range(10):
    p, q, dx = random_normalized_densities(seed)
    jsd = float(theory.js_divergence(p, q, dx))
    np.testing.assert_allclose(jsd, float64_jsd(p, q, dx), rtol=1e-5, atol=1e-7)
    assert 0.0 < jsd <= LOG2 + 1e-6


def test_optimal_value_is_minus_log_4_plus_2_jsd():
  for p, q, dx in [(P, Q, DX)] + [random_normalized_densities(s) for s in range(5)]:
    np.testing.assert_allclose(theory.optimal_value(p, q, dx),
                               -np.log(4.0) + 2.0 * theory.js_divergence(p, q, dx), atol=1e-5)


def test_optimal_discriminator_is_one_half_at_equilibrium_and_where_both_vanish():
  np.testing.assert_allclose(theory.optimal_discriminator(P, P), 0.5)
  d = theory.optimal_discriminator(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 2.0]))
  np.testing.assert_array_equal(d, [0.5, 1.0, 0.0])


def test_optimal_discriminator_maximizes_value():
  d_star = np.asarray(theory.optimal_discriminator(P, Q), np.float64)
  best = float(theory.value(d_star, P, Q, DX))
  rng = np.random.default_rng(0)
  for scale in (1e-3, 1e-2, 0.1):
    d = np.clip(d_star + scale * rng.normal(size=d_star.shape), 1e-6, 1 - 1e-6)
    assert float(theory.value(d, P, Q, DX)) < best
  # and the value is stationary at D*: the gradient in d is zero where there is mass.
  grad = jax.grad(lambda d: theory.value(d, P, Q, DX))(jnp.asarray(np.clip(d_star, 1e-3, 1 - 1e-3)))
  assert float(jnp.max(jnp.abs(grad[(d_star > 1e-3) & (d_star < 1 - 1e-3)]))) < 1e-4


def test_kl_nonnegative_asymmetric_and_infinite_off_support():
  pq, qp = float(theory.kl_divergence(P, Q, DX)), float(theory.kl_divergence(Q, P, DX))
  assert pq > 0 and qp > 0 and abs(pq - qp) > 0.05
  np.testing.assert_allclose(theory.kl_divergence(P, P, DX), 0.0, atol=1e-7)
  assert np.isinf(theory.kl_divergence(np.array([1.0, 1.0]), np.array([2.0, 0.0]), 0.5))


def test_kl_counts_a_subnormal_q_as_none_whatever_the_grid_length():
  """XLA's CPU log of float32 1e-40 (subnormal) was -inf for two cells and about -104 for three,
  at XLA's default optimization level (the one users run; the tests' level 0 gave -inf): KL was
  inf, or 51.3 once an empty cell was added. Run in a command at the default level."""
  script = """if True:
    import jax, jax.numpy as jnp
    from gan_jax import theory
    for empty_cells in (0, 1, 5):
      p = jnp.float32([0.5, 0.5] + [0.0] * empty_cells)
      q = jnp.float32([1.0, 1e-40] + [0.0] * empty_cells)
      print(theory.kl_divergence(p, q, 1.0),
            jax.jit(theory.kl_divergence, static_argnums=2)(p, q, 1.0))"""
  flags = os.environ["XLA_FLAGS"].replace("--xla_backend_optimization_level=0", "")
  printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, env={**os.environ, "XLA_FLAGS": flags}).stdout
  assert printed.split() == ["inf"] * 6
  # not read as underflows: NaN, a negative q, a float64 q (with float32 p) that is normal
  p = jnp.float32([0.5, 0.5, 0.0])
  assert np.isnan(theory.kl_divergence(p, jnp.float32([0.5, 0.5, np.nan]), 1.0))
  assert np.isnan(theory.kl_divergence(p, jnp.float32([1.0, -0.1, 0.0]), 1.0))
  # a float16 subnormal is a normal float32, where XLA takes its log (in float16: 1% off)
  p16, q16 = np.float32([0.9999, 1e-4]), np.float16([1.0, 2e-5])
  np.testing.assert_allclose(theory.kl_divergence(p16, q16, 1.0),
                             np.sum(rel_entr(np.float64(p16), np.float64(q16))), rtol=0.01)
  with jax.enable_x64():
    np.testing.assert_allclose(theory.kl_divergence(p, jnp.float64([1.0, 1e-50, 0.0]), 1.0),
                               0.5 * np.log(0.5) + 0.5 * np.log(0.5 / 1e-50), rtol=1e-6)


def test_zero_densities_give_no_nan():
  """Where one density vanishes, 0 log 0 counts as 0: the float64 references with rel_entr."""
  p, q, dx = random_normalized_densities(3)
  assert np.any((np.asarray(p) == 0) != (np.asarray(q) == 0))  # the case this test is about
  values = [theory.js_divergence(p, q, dx), theory.optimal_value(p, q, dx),
            theory.optimal_discriminator(p, q), theory.kl_divergence(p, p, dx)]
  assert not any(np.isnan(np.asarray(v)).any() for v in values)
  jsd = float64_jsd(p, q, dx)
  np.testing.assert_allclose(values[0], jsd, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(values[1], -np.log(4.0) + 2 * jsd, atol=1e-5)
  np.testing.assert_allclose(values[3], 0.0, atol=1e-7)


def test_theory_matches_closed_form_for_two_gaussians():
  """KL between N(0, 1) and N(1, 2^2) is log 2 + (1 + 1) / 8 - 1/2."""
  p = np.exp(-0.5 * GRID ** 2) / np.sqrt(2 * np.pi)
  q = np.exp(-0.5 * ((GRID - 1) / 2) ** 2) / (2 * np.sqrt(2 * np.pi))
  np.testing.assert_allclose(theory.kl_divergence(p, q, DX), np.log(2) + 2 / 8 - 0.5, atol=2e-4)


def test_optimal_value_gradient_is_twice_the_jsd_gradient_in_underflowing_tails():
  """d V(D*, G) / d theta = 2 dJSD / d theta, on a float32 grid whose tails reach 1e-32: the
  derivative of the quotient D* = p / (p + q) would divide by their square, 0 in float32."""
  grid = jnp.linspace(-12.0, 12.0, 481)
  dx = float(grid[1] - grid[0])

  def gaussian(mean):
    return jnp.exp(-0.5 * (grid - mean) ** 2) / jnp.sqrt(2 * jnp.pi)

  assert float(jnp.square(gaussian(0.0)[0] + gaussian(1.0)[0])) == 0.0  # the regime in question
  value_grad = jax.grad(lambda m: theory.optimal_value(gaussian(0.0), gaussian(m), dx))(1.0)
  jsd_grad = jax.grad(lambda m: theory.js_divergence(gaussian(0.0), gaussian(m), dx))(1.0)
  np.testing.assert_allclose(value_grad, 2.0 * jsd_grad, rtol=1e-5)
  assert float(jsd_grad) > 0.1


def far_apart_gaussians():
  """Unit Gaussians 3 apart on a float32 grid: D* rounds to 1.0 where p / q > 1e7."""
  x = jnp.linspace(-6.0, 6.0, 121)
  dx = float(x[1] - x[0])
  p, q = jnp.exp(-0.5 * x ** 2), jnp.exp(-0.5 * (x - 3.0) ** 2)
  return p / (p.sum() * dx), q / (q.sum() * dx), dx


def test_value_of_the_optimal_logits_is_the_optimal_value_where_d_star_rounds_to_one():
  p, q, dx = far_apart_gaussians()
  assert float(jnp.max(theory.optimal_discriminator(p, q))) == 1.0  # the regime in question
  assert np.isneginf(float(theory.value(theory.optimal_discriminator(p, q), p, q, dx)))
  reference = float64_jsd(p, q, dx)
  np.testing.assert_allclose(theory.value_of_logits(theory.optimal_logits(p, q), p, q, dx),
                             -np.log(4.0) + 2.0 * reference, rtol=1e-6)
  np.testing.assert_allclose(theory.optimal_value(p, q, dx), -np.log(4.0) + 2.0 * reference,
                             rtol=1e-6)
  # and where D* does not saturate, both forms of V(D, G) agree
  logits = jnp.asarray(np.random.default_rng(0).normal(size=P.shape), jnp.float32)
  np.testing.assert_allclose(theory.value_of_logits(logits, P, Q, DX),
                             theory.value(jax.nn.sigmoid(logits), P, Q, DX), rtol=1e-5)


def test_optimal_logits_are_the_log_ratio_and_infinite_where_one_density_vanishes():
  logits = theory.optimal_logits(np.array([0.0, 1.0, 0.0, 2.0]), np.array([0.0, 0.0, 2.0, 0.5]))
  np.testing.assert_allclose(logits, [0.0, np.inf, -np.inf, np.log(4.0)], rtol=1e-6)


def test_jsd_of_densities_near_the_smallest_normal_float_is_finite_and_exact():
  """Halving p + q would flush 2e-38 to 0, and KL(p || 0) is infinite."""
  p, q = jnp.array([2e-38, 1.0, 0.0]), jnp.array([0.0, 1.0, 3e-38])
  np.testing.assert_allclose(theory.js_divergence(p, q, 1.0), float64_jsd(p, q, 1.0),
                             rtol=1e-6, atol=0)
  grid = jnp.linspace(-30.0, 30.0, 601)  # Gaussian tails reach 1e-196 (0 in float32) and 1e-38
  gaussian = lambda mean: jnp.exp(-0.5 * (grid - mean) ** 2) / jnp.sqrt(2 * jnp.pi)
  np.testing.assert_allclose(theory.js_divergence(gaussian(0.0), gaussian(1.0), 0.1),
                             float64_jsd(gaussian(0.0), gaussian(1.0), 0.1), rtol=1e-6)


@pytest.mark.parametrize("shift", [1e-2, 1e-3, 1e-4])
def test_jsd_keeps_its_relative_accuracy_for_nearly_equal_densities(shift):
  """JSD(N(0, 1), N(shift, 1)) is about shift^2 / 8; p log p - p log m would cancel to noise."""
  grid = np.linspace(-8.0, 8.0, 1601)
  dx = grid[1] - grid[0]
  p = np.exp(-0.5 * grid ** 2) / np.sqrt(2 * np.pi)
  q = np.exp(-0.5 * (grid - shift) ** 2) / np.sqrt(2 * np.pi)
  # the float64 reference on the same float32 inputs
  p32, q32 = np.float32(p), np.float32(q)
  np.testing.assert_allclose(theory.js_divergence(p32, q32, dx), float64_jsd(p32, q32, dx),
                             rtol=1e-4)


@pytest.mark.parametrize("shift", [1e-2, 1e-3, 1e-4])
def test_kl_keeps_its_accuracy_for_nearly_equal_densities(shift):
  """KL(N(0, 1) || N(shift, 1)) is about shift^2 / 2, while the cells of p log(p / q) are about
  shift: summed as they stand, they cancelled to 48% off at 1e-4 (and below 0 at 1e-5)."""
  grid = np.linspace(-8.0, 8.0, 1601)
  dx = grid[1] - grid[0]
  p = np.float32(np.exp(-0.5 * grid ** 2) / np.sqrt(2 * np.pi))
  q = np.float32(np.exp(-0.5 * (grid - shift) ** 2) / np.sqrt(2 * np.pi))
  # the float64 reference on the same float32 inputs (whose masses differ by their rounding)
  reference = np.sum(rel_entr(np.float64(p), np.float64(q))) * dx
  np.testing.assert_allclose(theory.kl_divergence(p, q, dx), reference, rtol=2e-3)


def test_kl_of_a_narrow_density_against_a_broad_one_is_finite_in_its_underflowing_tails():
  """N(0, 0.1) against N(0.3, 0.5): q / p overflows float32 where p's tails reach 1e-38 and
  below (subnormal); the KL and its gradients stay finite and exact there."""
  grid = np.linspace(-3.0, 3.0, 6001)
  dx = grid[1] - grid[0]
  p = np.float32(np.exp(-0.5 * (grid / 0.1) ** 2) / (0.1 * np.sqrt(2 * np.pi)))
  q = np.float32(np.exp(-0.5 * ((grid - 0.3) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi)))
  assert np.any((p > 0) & (p < np.finfo(np.float32).tiny))  # the case this test is about
  reference = np.sum(rel_entr(np.float64(p), np.float64(q))) * dx
  np.testing.assert_allclose(theory.kl_divergence(p, q, dx), reference, rtol=1e-6)
  gradients = jax.grad(theory.kl_divergence, argnums=(0, 1))(jnp.asarray(p), jnp.asarray(q), 1.0)
  assert all(np.isfinite(g).all() for g in gradients)
  normal = p >= np.finfo(np.float32).tiny  # d/dp = log(p / q) + 1, d/dq = -p / q
  np.testing.assert_allclose(gradients[0][normal], np.log(np.float64(p[normal]) / q[normal]) + 1,
                             rtol=1e-5, atol=1e-5)
  # (as 1 - p / q from the cell plus -1 from the masses: float32 keeps it to about 1e-7)
  np.testing.assert_allclose(gradients[1], -np.float64(p) / q, rtol=1e-5, atol=1e-6)


def test_gradients_are_finite_in_underflowing_tails_and_where_d_is_0_or_1():
  # d/dp of p / (p + q) is q / (p + q)^2: the square underflows at 1e-25
  grad = jax.grad(lambda p: theory.optimal_discriminator(p, jnp.float32(2e-25)))(
      jnp.float32(1e-25))
  np.testing.assert_allclose(grad, 2e-25 / 3e-25 ** 2, rtol=1e-4)
  # V at D = 1 and D = 0 where the other density is 0: d/dD = p_data / D - p_g / (1 - D)
  grad = jax.grad(theory.value)(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.0]),
                                jnp.array([0.0, 0.5]), 1.0)
  np.testing.assert_allclose(grad, [0.5, -0.5])
  p, q, dx = far_apart_gaussians()
  grads = [jax.grad(f)(q) for f in (
      lambda q: theory.js_divergence(p, q, dx), lambda q: theory.optimal_value(p, q, dx),
      lambda q: jnp.sum(theory.optimal_discriminator(p, q)))]
  assert all(np.all(np.isfinite(g)) for g in grads)
  # d V(D*, G) / d p_g = log(1 - D*) (the terms through D* cancel at the optimum)
  p64, q64 = np.float64(p), np.float64(q)
  np.testing.assert_allclose(grads[1], dx * (np.log(q64) - np.log(p64 + q64)), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.parametrize("function, arguments", [
    (theory.js_divergence, ((5,), (5, 1), 0.1)), (theory.kl_divergence, ((5,), (4,), 0.1)),
    (theory.optimal_discriminator, ((5,), (1, 5))), (theory.value, ((5,), (5,), (5, 1), 0.1)),
    (theory.optimal_value, ((3, 2), (2, 3), 0.1))])
def test_densities_of_different_shapes_are_refused_not_broadcast(function, arguments):
  values = [jnp.ones(a) if isinstance(a, tuple) else a for a in arguments]
  with pytest.raises(ValueError, match="one shape"):
    function(*values)


@pytest.mark.parametrize("function, arguments", [
    (theory.js_divergence, 2), (theory.kl_divergence, 2), (theory.optimal_discriminator, 2),
    (theory.optimal_logits, 2), (theory.value, 3), (theory.value_of_logits, 3),
    (theory.optimal_value, 2)])
def test_densities_given_as_lists_give_what_arrays_give(function, arguments):
  grids = ([0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.4, 0.7, 0.5])[:arguments]
  extra = (0.5,) if function not in (theory.optimal_discriminator, theory.optimal_logits) else ()
  np.testing.assert_array_equal(function(*grids, *extra),
                                function(*map(jnp.asarray, grids), *extra))
  counts = ([0, 1, 0], [1, 1, 0], [0, 1, 1])[:arguments]  # integers: as their floats
  np.testing.assert_array_equal(function(*counts, *extra),
                                function(*(jnp.float32(c) for c in counts), *extra))


@pytest.mark.parametrize("p, q", [(5.0, 2e-38), (2e-38, 3e-38), (1e-25, 2e-25), (1.0, 3.0)])
def test_gradients_in_the_densities_equal_their_closed_forms_down_to_the_smallest_normal_float(
    p, q):
  """d/dq of D* = -p / (p + q)^2, of V(D*, G) = log(q / (p + q)) and of the JSD =
  log(2 q / (p + q)) / 2 (one cell, dx = 1): in float32 the formulas' intermediates (the square,
  q / (p + q), exp(-log ratio)) underflow where these do not."""
  grad = lambda f: float(jax.grad(lambda b: f(jnp.float32([p]), jnp.stack([b])))(jnp.float32(q)))
  total = np.float64(p) + np.float64(q)
  np.testing.assert_allclose(grad(lambda a, b: theory.optimal_discriminator(a, b)[0]),
                             -p / total ** 2, rtol=1e-5)
  np.testing.assert_allclose(grad(lambda a, b: theory.optimal_value(a, b, 1.0)),
                             np.log(q / total), rtol=1e-5)
  np.testing.assert_allclose(grad(lambda a, b: theory.js_divergence(a, b, 1.0)),
                             0.5 * np.log(2 * q / total), rtol=1e-5)
