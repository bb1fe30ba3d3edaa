"""The theory lab: trained D against the closed form D*, and the saturating generator loss."""
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import theory
from gan_jax import cli, distributions, plotting
from tests.test_theory import float64_jsd


def test_density_is_normalized_and_has_no_subnormal_values():
  p = theory.density(distributions.mixture([-2.0, 2.0], [0.4, 0.4]))
  np.testing.assert_allclose(p.sum() * theory.DX, 1.0, rtol=1e-12)
  assert np.all((p == 0) | (p >= 1e-30))


def test_mass_region_of_a_gaussian_is_its_central_interval():
  p = theory.density(distributions.mixture([0.0], [1.0]))
  region = theory.mass_region(p, 0.99)
  assert p[region].sum() * theory.DX >= 0.99
  inside = theory.GRID[region]
  # one interval, +- 2.576 standard deviations, to the grid's resolution.
  assert np.all(np.diff(np.flatnonzero(region)) == 1)
  np.testing.assert_allclose([inside.min(), inside.max()], [-2.5758, 2.5758], atol=2 * theory.DX)


@pytest.mark.parametrize("overrides, message", [
    (dict(gan_steps=120), "--gan_steps=120 is not a multiple"),
    (dict(gan_warmup_steps=-5), r"--gan_warmup_steps must be in \[0, --gan_steps=2000\], got -5"),
])
def test_bad_settings_raise_usage_error(tmp_path, overrides, message):
  with pytest.raises(cli.UsageError, match=message):
    theory.run_lab(theory.TheoryConfig(**overrides), str(tmp_path))


@pytest.fixture(scope="module")
def short_lab(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("theory")
  config = theory.TheoryConfig(fit_steps=1000, fit_batch_size=2048, gan_steps=600)
  theory.run_lab(config, str(workdir))
  with open(workdir / "theory.json") as f:
    return workdir, json.load(f)


@pytest.mark.slow
def test_lab_writes_its_figures_and_numbers(short_lab):
  workdir, results = short_lab
  for name in ("optimal_discriminator.png", "saturation.png"):
    assert (workdir / name).stat().st_size > 10_000
  assert set(results["optimal_discriminator"]["cases"]) == set(theory.CASES)
  assert set(results["saturation"]["losses"]) == set(theory.COMPARED_LOSSES)


def test_a_run_that_fails_while_writing_leaves_the_earlier_outputs_all_of_one_run(
    short_lab, tmp_path, monkeypatch):
  """A full disk after the first figure of a rerun (with another seed): the earlier run's
  figures and numbers stay as they were, and no staging folder is left."""
  workdir = tmp_path / "lab"
  shutil.copytree(short_lab[0], workdir)
  before = {path.name: path.read_bytes() for path in workdir.iterdir()}

  def full_disk(*args, **kwargs):
    raise cli.RunError("could not write saturation.png (No space left on device)")
  monkeypatch.setattr(plotting, "plot_saturation", full_disk)
  with pytest.raises(cli.RunError, match="No space left"):
    theory.run_lab(theory.TheoryConfig(seed=7, fit_steps=20, gan_steps=100, gan_warmup_steps=10),
                   str(workdir))
  assert {path.name: path.read_bytes() for path in workdir.iterdir()} == before


@pytest.mark.slow
def test_trained_discriminator_approaches_the_closed_form(short_lab):
  _, results = short_lab
  for case in results["optimal_discriminator"]["cases"].values():
    np.testing.assert_allclose(case["optimal_value"], case["minus_log4_plus_2jsd"], atol=1e-5)
    # D* maximizes V(D, G): the trained value is below it, and close after a short training.
    assert -0.01 < case["trained_value"] - case["optimal_value"] <= 1e-5
    # the lab's targets are for its default 4,000 steps: a quarter of them reaches half as far
    assert case["max_abs_error"] < 2 * theory.MAX_ERROR_TARGET
    assert case["mean_abs_error"] <= case["max_abs_error"]
    assert case["targets_met"] == (case["max_abs_error"] <= theory.MAX_ERROR_TARGET
                                   and abs(case["value_gap"]) <= theory.VALUE_GAP_TARGET)


@pytest.mark.slow
def test_minimax_generator_stalls_where_the_non_saturating_one_moves(short_lab):
  _, results = short_lab
  minimax = results["saturation"]["losses"]["minimax"]
  non_saturating = results["saturation"]["losses"]["non_saturating"]
  # Over the steps where D rejects the samples confidently (each run its own D), the minimax
  # gradient is orders of magnitude smaller.
  assert minimax["median_g_grad_norm_there"] < 0.01 * non_saturating["median_g_grad_norm_there"]
  # Against the same D (the warm-up), the ratio is about (1 - D(G(z))) / D(G(z)) > 99
  same = results["saturation"]["same_discriminator"]
  assert same["steps"] > 10 and same["median_predicted_ratio"] > 99
  np.testing.assert_allclose(same["median_gradient_ratio"], same["median_predicted_ratio"],
                             rtol=0.5)
  assert non_saturating["steps_to_data"] is not None and minimax["steps_to_data"] is None
  data_mean = results["saturation"]["data_mean"]
  assert abs(non_saturating["final_sample_mean"] - data_mean) < 1.0
  assert abs(minimax["final_sample_mean"] - data_mean) > 5.0


def test_optimal_value_of_the_cases_is_minus_log4_plus_2_jsd_between_minus_log4_and_0():
  for data_mixture, g_mixture in theory.CASES.values():
    p_data, p_g = theory.density(data_mixture), theory.density(g_mixture)
    value = float(theory.theory.optimal_value(jnp.asarray(p_data), jnp.asarray(p_g), theory.DX))
    np.testing.assert_allclose(value, -np.log(4.0) + 2 * float64_jsd(p_data, p_g, theory.DX),
                               atol=1e-5)
    assert -np.log(4.0) - 1e-5 <= value <= 0.0
