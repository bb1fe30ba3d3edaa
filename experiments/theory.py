"""Theory lab: the optimal discriminator and the saturating generator loss, measured.

  python -m experiments.theory --workdir=DIR

(a) Optimal discriminator. For fixed 1-D mixtures p_data and p_g, a discriminator is trained to
convergence on samples (fresh batches every step, learning rate decayed to 0) and compared on a
grid with the closed form D* = p_data / (p_data + p_g). Reported per case: max |D - D*| on the
region where the densities carry mass (the smallest set of grid cells holding 99% of the mass of
(p_data + p_g) / 2; beyond it the samples hardly constrain D), the mean |D - D*| weighted by that
mass over the whole grid, JSD(p_data || p_g), V(D*, G) = -log 4 + 2 JSD, the value V(D, G) of
the trained discriminator, integrated on the grid, and whether the targets (``MAX_ERROR_TARGET``,
``VALUE_GAP_TARGET``) are met.

(b) Saturation. The same 1-D GAN, from the same initialization, is trained with the minimax
generator loss log(1 - D(G(z))) and with the non-saturating -log D(G(z)). The generator starts
far from the data and the discriminator takes several updates per generator update, so it soon
rejects the samples confidently (D(G(z)) -> 0). The minimax gradient is proportional to D(G(z))
there and the generator stalls; the non-saturating one is not, and the generator reaches the
data. While the generator's learning rate is still 0 (the warm-up) both runs hold the same
discriminator, so their gradients compare directly there: the ratio of the non-saturating to the
minimax gradient norm against the prediction (1 - D(G(z))) / D(G(z)). The generator descends
with plain SGD, whose steps are proportional to the gradient: Adam divides the gradient by its
own running scale, which hides a vanishing gradient for a long time.

Writes ``optimal_discriminator.png``, ``saturation.png`` and ``theory.json`` (every number the
figures show) to ``--workdir``.
"""
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging
from jax import lax

from experiments.vanilla_gan import make_generate, make_train_chunk
from gan_jax import (cli, distributions, losses, plotting, run_log, theory, train_state,
                     train_step)
from gan_jax.cli import field, require
from gan_jax.models import mlp

Array = jax.Array
GRID = np.linspace(-8.0, 8.0, 3201)
DX = float(GRID[1] - GRID[0])
MASS = 0.99  # the "region with mass" holds this much of (p_data + p_g) / 2
MAX_ERROR_TARGET = 0.05  # max |D - D*| on the region with mass
VALUE_GAP_TARGET = 0.01  # (-log 4 + 2 JSD) - V(D, G) of the trained D
CONFIDENT = 0.01  # D(G(z)) below this: the discriminator rejects the samples confidently
COMPARED_LOSSES = ("minimax", "non_saturating")

# (p_data, p_g) pairs for part (a): from the Nash equilibrium to almost disjoint supports.
CASES = {
    "equal (p_g = p_data)": (distributions.mixture([-2.0, 1.0], [0.5, 0.8], [0.3, 0.7]),
                             distributions.mixture([-2.0, 1.0], [0.5, 0.8], [0.3, 0.7])),
    "overlapping": (distributions.mixture([-2.0, 1.0], [0.5, 0.8], [0.3, 0.7]),
                    distributions.mixture([0.0, 2.5], [1.0, 0.4])),
    "nearly disjoint": (distributions.mixture([-2.0, 2.0], [0.4, 0.4]),
                        distributions.mixture([0.0], [0.4])),
}
# Part (b): the data, far beyond the tails of a freshly initialized generator (within about 3 of 0).
SATURATION_DATA = distributions.mixture([8.0], [0.5])
OUTPUTS = ("optimal_discriminator.png", "saturation.png", "theory.json")


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
  """The theory lab; every field is a flag of ``experiments.theory``."""
  seed: int = field(0, "Seed of the initializations and samples.")
  fit_steps: int = field(4000, "(a) Discriminator updates per case.")
  fit_batch_size: int = field(4096, "(a) Samples of each density per update.")
  fit_learning_rate: float = field(3e-3, "(a) Adam learning rate, cosine-decayed to 0.")
  width: int = field(64, "Units per hidden layer of every network (two hidden layers).")
  gan_steps: int = field(2000, "(b) Generator updates per loss.")
  gan_batch_size: int = field(256, "(b) Samples per update.")
  gan_n_critic: int = field(5, "(b) Discriminator updates per generator update.")
  gan_warmup_steps: int = field(100, "(b) Steps at the start in which the generator's learning "
                                "rate is 0: the discriminator learns to reject its samples.")
  gan_g_learning_rate: float = field(1e-3, "(b) Generator SGD learning rate.")
  gan_d_learning_rate: float = field(1e-3, "(b) Discriminator Adam learning rate.")
  gan_log_every_steps: int = field(50, "(b) Steps between records of the generator's samples.")


def validate(config: TheoryConfig) -> None:
  """Raises UsageError naming the first bad setting."""
  cli.require_positive(config, ("fit_steps", "fit_batch_size", "width", "gan_steps",
                                "gan_batch_size", "gan_n_critic", "gan_log_every_steps",
                                "fit_learning_rate", "gan_g_learning_rate",
                                "gan_d_learning_rate"))
  require(config.gan_steps % config.gan_log_every_steps == 0, f"--gan_steps={config.gan_steps} is "
          f"not a multiple of --gan_log_every_steps={config.gan_log_every_steps}")
  cli.require_seed(config.seed)
  require(0 <= config.gan_warmup_steps <= config.gan_steps, f"--gan_warmup_steps must be in "
          f"[0, --gan_steps={config.gan_steps}], got {config.gan_warmup_steps}")


def density(mixture: distributions.GaussianMixture) -> np.ndarray:
  """The mixture's density on ``GRID``, normalized so that it sums to 1 / DX.

  Values below 1e-30 are set to 0: they carry no mass, and in the float32 arithmetic of
  ``gan_jax.theory`` their products and quotients fall below 1.2e-38, into subnormal numbers,
  which the CPU may flush to 0 in one operation and not in another.
  """
  p = np.exp(np.asarray(mixture.log_prob(jnp.asarray(GRID[:, None])), np.float64))
  p = np.where(p < 1e-30, 0.0, p)
  return p / (p.sum() * DX)


def mass_region(p: np.ndarray, mass: float = MASS) -> np.ndarray:
  """Boolean mask of the smallest set of cells holding ``mass`` of the density ``p``."""
  order = np.argsort(p)[::-1]
  inside = np.cumsum(p[order]) * DX <= mass
  inside[np.argmin(inside)] = True  # the cell that crosses the threshold
  mask = np.zeros_like(inside)
  mask[order] = inside
  return mask


def fit_discriminator(p_data: distributions.GaussianMixture, p_g: distributions.GaussianMixture,
                      config: TheoryConfig, key: Array) -> np.ndarray:
  """Trains D on samples of the two mixtures; returns its logits on ``GRID``, float64
  ``(len(GRID),)``."""
  discriminator = mlp.MLPDiscriminator(width=config.width, depth=2, activation="elu")
  init_key, data_key = jax.random.split(key)
  params = discriminator.init(init_key, jnp.zeros((1, 1)), train=False)["params"]
  tx = optax.adam(optax.cosine_decay_schedule(config.fit_learning_rate, config.fit_steps))

  def loss_fn(params, real, fake):
    logits = lambda x: discriminator.apply({"params": params}, x, train=False)
    return losses.discriminator_loss(logits(real), logits(fake))

  def update(carry, step):
    params, opt_state = carry
    real_key, fake_key = jax.random.split(jax.random.fold_in(data_key, step))
    grads = jax.grad(loss_fn)(params, p_data.sample(real_key, config.fit_batch_size),
                              p_g.sample(fake_key, config.fit_batch_size))
    updates, opt_state = tx.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  train = jax.jit(lambda params: lax.scan(update, (params, tx.init(params)),
                                          jnp.arange(config.fit_steps))[0][0])
  params = train(params)
  logits = discriminator.apply({"params": params}, jnp.asarray(GRID[:, None], jnp.float32),
                               train=False)
  return np.asarray(logits, np.float64)


def optimal_discriminator_lab(config: TheoryConfig, key: Array) -> Dict[str, dict]:
  """Part (a): per case, the trained and optimal discriminators and the numbers that compare them.

  Returns:
    case name -> ``d``, ``d_star`` (NaN where neither density has mass: D* is a convention
    there), ``p_data``, ``p_g``, ``region`` (arrays on ``GRID``) and ``max_abs_error``,
    ``mean_abs_error``, ``jsd``, ``optimal_value``, ``minus_log4_plus_2jsd``, ``trained_value``.
  """
  results = {}
  for i, (name, (data_mixture, g_mixture)) in enumerate(CASES.items()):
    p_data, p_g = density(data_mixture), density(g_mixture)
    logits = fit_discriminator(data_mixture, g_mixture, config, jax.random.fold_in(key, i))
    d = 1.0 / (1.0 + np.exp(-logits))
    d_star = np.asarray(theory.optimal_discriminator(p_data, p_g), np.float64)
    mass = 0.5 * (p_data + p_g)
    region = mass_region(mass)
    jsd = float(theory.js_divergence(p_data, p_g, DX))
    results[name] = dict(
        d=d, d_star=np.where(mass > 0, d_star, np.nan), p_data=p_data, p_g=p_g, region=region,
        max_abs_error=float(np.max(np.abs(d - d_star)[region])),
        mean_abs_error=float(np.sum(mass * np.abs(d - d_star)) * DX), jsd=jsd,
        optimal_value=float(theory.optimal_value(p_data, p_g, DX)),
        minus_log4_plus_2jsd=-np.log(4.0) + 2.0 * jsd,
        trained_value=float(theory.value_of_logits(logits, p_data, p_g, DX)))
    logging.info("(a) %s: max |D - D*| = %.4f on the region with mass, mass-weighted mean "
                 "%.4f; JSD = %.4f; -log 4 + 2 JSD = %.4f; V(D, G) of the trained D = %.4f", name,
                 results[name]["max_abs_error"], results[name]["mean_abs_error"], jsd,
                 results[name]["minus_log4_plus_2jsd"], results[name]["trained_value"])
  return results


def saturation_lab(config: TheoryConfig, key: Array) -> Dict[str, dict]:
  """Part (b): the same GAN trained with each generator loss, from the same initialization.

  Returns:
    loss name -> per-step ``d_fake``, ``g_grad_norm`` ``(gan_steps,)``, and every
    ``gan_log_every_steps`` steps the generator's sample mean ``sample_mean`` ``(T,)`` at ``steps``.
  """
  generator = mlp.MLPGenerator(latent_dim=1, output_dim=1, width=config.width, depth=2)
  discriminator = mlp.MLPDiscriminator(width=config.width, depth=2)
  # Three independent keys: the state splits its key into the players' init keys and the step
  # key, which fold_in(key, i) would reproduce.
  init_key, sample_key, data_key = jax.random.split(key, 3)
  state = train_state.create_gan_state(init_key, generator, discriminator, (1,),
                                       optax.sgd(optax.join_schedules(
                                           [optax.constant_schedule(0.0),
                                            optax.constant_schedule(config.gan_g_learning_rate)],
                                           [config.gan_warmup_steps])),
                                       optax.adam(config.gan_d_learning_rate, b1=0.5))
  generate = jax.jit(make_generate(generator, 10_000))
  results = {}
  for loss in COMPARED_LOSSES:
    step_fn = train_step.make_train_step(
        generator, discriminator, train_step.StepConfig(loss=loss, n_critic=config.gan_n_critic))
    chunk = jax.jit(make_train_chunk(step_fn, lambda _, k, n: SATURATION_DATA.sample(k, n),
                                     config.gan_batch_size * config.gan_n_critic,
                                     config.gan_log_every_steps))
    run_state, records, means = state, [], []
    for _ in range(config.gan_steps // config.gan_log_every_steps):
      run_state, metrics = chunk(run_state, data_key, ())
      records.append(jax.device_get(metrics))
      means.append(float(jnp.mean(generate(run_state, sample_key))))
    results[loss] = {name: np.concatenate([r[name] for r in records])
                     for name in ("d_fake", "g_grad_norm")}
    results[loss].update(sample_mean=np.array(means), steps=config.gan_log_every_steps * np.arange(
        1, len(means) + 1))
  return results


def _saturation_summary(run: Dict[str, np.ndarray]) -> dict:
  """The numbers behind the saturation figure for one loss.

  ``steps_to_data``: the first recorded step at which the generator's sample mean is within one
  data standard deviation of the data mean (None if it never gets there).
  """
  mask = run["d_fake"] < CONFIDENT
  data_mean, data_std = SATURATION_DATA.means[0, 0], SATURATION_DATA.stds[0]
  reached = np.flatnonzero(np.abs(run["sample_mean"] - data_mean) < data_std)
  return {
      f"steps_with_d_fake_below_{CONFIDENT}": int(mask.sum()),
      "median_g_grad_norm_there": float(np.median(run["g_grad_norm"][mask])) if mask.any()
                                  else None,
      "median_g_grad_norm": float(np.median(run["g_grad_norm"])),
      "steps_to_data": int(run["steps"][reached[0]]) if reached.size else None,
      "final_sample_mean": float(run["sample_mean"][-1]),
  }


def _fit_summary(fit: dict, numbers) -> dict:
  """The numbers of one case of part (a), its value gap and whether it meets the targets."""
  gap = fit["minus_log4_plus_2jsd"] - fit["trained_value"]
  return {**{k: fit[k] for k in numbers}, "value_gap": gap,
          "targets_met": bool(fit["max_abs_error"] <= MAX_ERROR_TARGET
                              and abs(gap) <= VALUE_GAP_TARGET)}


def same_discriminator_comparison(runs: Dict[str, dict], warmup_steps: int) -> dict:
  """The two losses' generator gradients against one discriminator: in the warm-up, where the
  generator does not move, both runs hold the same states. Over the warm-up steps with
  D(G(z)) < ``CONFIDENT``: the median ratio of the non-saturating to the minimax gradient norm,
  and the median of its prediction (1 - D(G(z))) / D(G(z)) (``d_fake`` is the mean of D(G(z))
  over the critic updates of the step, so the prediction is approximate)."""
  d_fake = runs["minimax"]["d_fake"][:warmup_steps]
  mask = d_fake < CONFIDENT
  ratio = (runs["non_saturating"]["g_grad_norm"][:warmup_steps]
           / runs["minimax"]["g_grad_norm"][:warmup_steps])
  return {"steps": int(mask.sum()),
          "median_gradient_ratio": float(np.median(ratio[mask])) if mask.any() else None,
          "median_predicted_ratio": float(np.median((1 - d_fake[mask]) / d_fake[mask]))
                                    if mask.any() else None}


def _write_outputs(config: TheoryConfig, fits: dict, runs: dict, folder: str,
                   wall_s: float) -> dict:
  """Writes the two figures and ``theory.json`` (returned) into ``folder``."""
  numbers = ("max_abs_error", "mean_abs_error", "jsd", "optimal_value", "minus_log4_plus_2jsd",
             "trained_value")
  plotting.plot_discriminator_fits(GRID, [
      dict(fit, title=f"{name}\nmax |D - D*| = {fit['max_abs_error']:.4f}, "
           f"JSD = {fit['jsd']:.4f}\n-log 4 + 2 JSD = {fit['minus_log4_plus_2jsd']:.4f}, "
           f"trained V(D, G) = {fit['trained_value']:.4f}")
      for name, fit in fits.items()], os.path.join(folder, "optimal_discriminator.png"))
  plotting.plot_saturation(runs, float(SATURATION_DATA.means[0, 0]),
                           os.path.join(folder, "saturation.png"), config.gan_warmup_steps)
  results = {
      "config": dataclasses.asdict(config),
      "optimal_discriminator": {
          "figure": "optimal_discriminator.png", "mass_region": MASS,
          "targets": {"max_abs_error": MAX_ERROR_TARGET, "value_gap": VALUE_GAP_TARGET},
          "cases": {name: _fit_summary(fit, numbers) for name, fit in fits.items()}},
      "saturation": {"figure": "saturation.png",
                     "data_mean": float(SATURATION_DATA.means[0, 0]),
                     "losses": {loss: _saturation_summary(run) for loss, run in runs.items()},
                     "same_discriminator": same_discriminator_comparison(
                         runs, config.gan_warmup_steps)},
      "wall_s": wall_s,
  }
  run_log.write_json(os.path.join(folder, "theory.json"), results)
  return results


def run_lab(config: TheoryConfig, workdir: str) -> dict:
  """Runs both parts, then writes the figures and ``theory.json`` to ``workdir``, together: they
  are written into a staging folder there first and then moved into place, so that a run
  stopped at any point (or one beside it in the same workdir) leaves the outputs all of one run.

  Returns:
    What ``theory.json`` holds.
  """
  start_time = time.time()
  validate(config)
  cli.make_writable_dir(workdir)
  key = jax.random.PRNGKey(config.seed)
  fits = optimal_discriminator_lab(config, jax.random.fold_in(key, 0))
  runs = saturation_lab(config, jax.random.fold_in(key, 1))
  try:
    staging = tempfile.mkdtemp(prefix=".staging-", dir=workdir)
    try:
      results = _write_outputs(config, fits, runs, staging, time.time() - start_time)
      for name in OUTPUTS:
        os.replace(os.path.join(staging, name), os.path.join(workdir, name))
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  except OSError as e:  # a full disk, or the folder's permissions changed under the run
    raise cli.RunError(f"could not write the outputs in {workdir} ({e}); free space or fix the "
                       "folder's permissions, then run again") from e
  for name, case in results["optimal_discriminator"]["cases"].items():
    logging.info("(a) %s: targets %s", name, "met" if case["targets_met"] else "NOT met")
  for loss, summary in results["saturation"]["losses"].items():
    reached = summary["steps_to_data"]
    logging.info("(b) %s: %d steps with D(G(z)) < %g, median generator gradient norm there "
                 "%s; reaches the data %s; final mean of G(z) %.3f (data mean %.1f)",
                 loss, summary[f"steps_with_d_fake_below_{CONFIDENT}"], CONFIDENT,
                 summary["median_g_grad_norm_there"],
                 "never" if reached is None else f"at step {reached}",
                 summary["final_sample_mean"], results["saturation"]["data_mean"])
  same = results["saturation"]["same_discriminator"]
  logging.info("(b) against the same discriminator (%d warm-up steps with D(G(z)) < %g): "
               "non-saturating / minimax gradient norm, median %s (predicted (1 - D) / D: %s)",
               same["steps"], CONFIDENT, same["median_gradient_ratio"],
               same["median_predicted_ratio"])
  logging.info("wall time %.1f s; figures and theory.json in %s", results["wall_s"], workdir)
  return results


def main(argv):
  run_lab(cli.config_from_flags(TheoryConfig), flags.FLAGS.workdir)


if __name__ == "__main__":
  cli.define_flags(TheoryConfig)
  flags.adopt_module_key_flags(cli)  # --helpshort lists them
  flags.DEFINE_string("workdir", None, "Folder for the figures and theory.json.")
  flags.mark_flag_as_required("workdir")
  cli.run(main)
