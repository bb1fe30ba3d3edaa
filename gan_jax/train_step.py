"""The GAN train step: a pure function ``(GANState, real) -> (GANState, metrics)``.

One step does ``n_critic`` discriminator updates, then one generator update, as in Goodfellow et
al. 2014 (Algorithm 1) and Gulrajani et al. 2017. As in the PyTorch DCGAN reference, the generator
runs forward once per critic update: the generator update reuses the samples (and the forward pass)
of the last critic update, and scores them with the freshly updated discriminator.

Randomness: the step's key is ``fold_in(state.rng, state.step)``; latents and the gradient
penalty's interpolation weights are drawn per global example index
(``parallel.per_example_noise``), so the step gives the same numbers on one device and, under
``pmap`` or ``shard_map``, on many. Updates whose loss or gradient is not finite are skipped (the
old params, optimizer state and batch statistics are kept) and counted in
``metrics['nonfinite']``.
"""
import dataclasses
from typing import Callable, Dict, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from gan_jax import losses, parallel
from gan_jax.train_state import GANState, ModelState

Array = jax.Array
Metrics = Dict[str, Array]


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What a step optimizes.

  Attributes:
    loss: a name in ``losses.LOSSES`` ("non_saturating", "minimax", "wasserstein", ...), or a
      ``losses.GANLoss`` of your own.
    n_critic: discriminator updates per generator update.
    gradient_penalty: weight of the WGAN-GP penalty (0 disables it).
    r1_penalty: weight of the R1 penalty, gamma / 2 in Mescheder et al. 2018 (0 disables it).
    ema_decay: decay of the generator's weight EMA; used when the state holds ``ema_params``.
  """
  loss: Union[str, losses.GANLoss] = "non_saturating"
  n_critic: int = 1
  gradient_penalty: float = 0.0
  r1_penalty: float = 0.0
  ema_decay: float = 0.999

  def __post_init__(self):
    """ValueError naming the first setting out of range, as ``name must be ..., got value``."""
    checks = [
        (isinstance(self.loss, (str, losses.GANLoss)),
         f"loss must be a name or a losses.GANLoss, got {self.loss!r}"),
        (not isinstance(self.loss, str) or self.loss in losses.LOSSES,
         f"loss must be one of {', '.join(sorted(losses.LOSSES))}, got {self.loss!r}"),
        (self.n_critic >= 1, f"n_critic must be positive, got {self.n_critic}"),
        *((getattr(self, name) >= 0, f"{name} must be >= 0 (0: off), got "
           f"{getattr(self, name)}") for name in ("gradient_penalty", "r1_penalty")),
        (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")]
    for ok, message in checks:
      if not ok:
        raise ValueError(message)

  @classmethod
  def of(cls, config) -> "StepConfig":
    """The step an experiment's config asks for: any config with these fields, whose
    ``ema_decay`` of 0 means no EMA (the state then holds none, and the decay is unused)."""
    return cls(loss=config.loss, n_critic=config.n_critic,
               gradient_penalty=config.gradient_penalty, r1_penalty=config.r1_penalty,
               ema_decay=config.ema_decay or cls.ema_decay)


def _all_finite(*trees) -> Array:
  leaves = jax.tree_util.tree_leaves(trees)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _apply_if_finite(state: ModelState, grads, batch_stats, ok: Array
                     ) -> Tuple[ModelState, Array]:
  """``(state with grads applied and the new batch_stats, True)``, or ``(state, False)`` if not
  ``ok`` (non-finite loss or gradients) or if the update itself is not finite (finite gradients
  times an infinite learning rate, say)."""
  updated = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
  ok = ok & _all_finite(updated.params, updated.opt_state)
  return jax.tree_util.tree_map(lambda new, old: jnp.where(ok, new, old), updated, state), ok


def make_train_step(generator: nn.Module, discriminator: nn.Module, config: StepConfig,
                    axis_name: Optional[str] = None
                    ) -> Callable[[GANState, Array], Tuple[GANState, Metrics]]:
  """Builds the train step for one shard of the batch.

  Args:
    generator: Flax module ``(latents (b, latent_dim), train) -> samples (b, *data_shape)``,
      with a ``latent_dim`` attribute.
    discriminator: Flax module ``(samples, train) -> logits (b,)``, or ``(b / packing,)`` for
      one with a ``packing`` attribute, which scores packs of consecutive samples (PacGAN); the
      penalties are then taken per pack. The penalties need each logit to depend on its own
      sample (pack) only, which the module must declare with a true
      ``scores_examples_independently`` attribute: one without it, or with it False (batch norm
      in training), is refused with them.
    config: losses, critic updates, regularizers, EMA.
    axis_name: the pmap axis to average gradients, metrics and batch statistics over, or None
      for the single-device step. Models with batch norm should be built with the same
      ``axis_name`` so that they normalize with statistics of the global batch.

  Returns:
    ``train_step(state, real) -> (state, metrics)`` where ``real`` holds ``n_critic * b`` data
    samples ``(n_critic * b, *data_shape)``; example j of critic update i is ``real[j * n_critic
    + i]``, so contiguous shards of the global batch hold the same examples of every update.
    ``metrics`` maps names to scalars averaged over replicas: ``d_loss``, ``g_loss`` (adversarial
    losses), ``d_real`` = mean D(x), ``d_fake`` = mean D(G(z)) (before the critic update; D is
    the sigmoid of the logits, also for the losses whose critic outputs a score, Wasserstein,
    hinge and least squares, where it is only a bounded summary of the score), ``d_grad_norm``,
    ``g_grad_norm``, and ``gradient_penalty`` / ``r1_penalty`` when enabled; the critic's
    metrics are also averaged over its ``n_critic`` updates. ``nonfinite`` counts the updates
    skipped in this step (the same count on every replica, which decide together).
  """
  if config.gradient_penalty or config.r1_penalty:
    independent = getattr(discriminator, "scores_examples_independently", None)
    if not independent:
      raise ValueError(
          "the gradient penalty and R1 take each sample's own input gradient, and this "
          + ("discriminator mixes the samples of a batch (batch norm)" if independent is False
             else f"discriminator ({type(discriminator).__name__}) does not say whether it "
             "mixes the samples of a batch: give it a scores_examples_independently property, "
             "True only if no layer does (batch norm in training does)")
          + "; use one that scores samples independently "
          "(dcgan.Discriminator(normalization='layer' or 'spectral'), mlp.MLPDiscriminator)")
  gan_loss = config.loss if isinstance(config.loss, losses.GANLoss) else losses.get_loss(
      config.loss)
  n_critic = config.n_critic
  packing = getattr(discriminator, "packing", 1)  # PacGAN: D scores packs of this many samples

  def forward_d(d_params, batch_stats, x):
    logits, updates = discriminator.apply({"params": d_params, "batch_stats": batch_stats}, x,
                                          train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]

  def discriminator_update(d_state: ModelState, real, fake, key):
    def loss_fn(d_params):
      real_logits, batch_stats = forward_d(d_params, d_state.batch_stats, real)
      fake_logits, batch_stats = forward_d(d_params, batch_stats, fake)
      adversarial = gan_loss.discriminator(real_logits, fake_logits)
      logit_fn = lambda x: forward_d(d_params, batch_stats, x)[0]
      penalties = {}
      if config.gradient_penalty:
        weights = parallel.per_example_noise(key, (real.shape[0] // packing,), axis_name,
                                             draw=jax.random.uniform)
        penalties["gradient_penalty"] = losses.gradient_penalty(
            logit_fn, real, fake, weights=weights, group_size=packing)
      if config.r1_penalty:
        penalties["r1_penalty"] = losses.r1_penalty(logit_fn, real, group_size=packing)
      total = adversarial + (config.gradient_penalty * penalties.get("gradient_penalty", 0.0)
                             + config.r1_penalty * penalties.get("r1_penalty", 0.0))
      aux = dict(penalties, d_loss=adversarial, d_real=jnp.mean(nn.sigmoid(real_logits)),
                 d_fake=jnp.mean(nn.sigmoid(fake_logits)))
      return total, (batch_stats, aux)

    (total, (batch_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        d_state.params)
    grads, total = parallel.mean_over_replicas((grads, total), axis_name)
    new_state, ok = _apply_if_finite(d_state, grads,
                                     parallel.mean_over_replicas(batch_stats, axis_name),
                                     _all_finite(total, grads))
    return new_state, dict(aux, d_grad_norm=optax.tree.norm(grads)), ok

  def generator_forward(g_state: ModelState, latents):
    def forward(g_params):
      fake, updates = generator.apply({"params": g_params, "batch_stats": g_state.batch_stats},
                                      latents, train=True, mutable=["batch_stats"])
      return fake, updates["batch_stats"]
    return jax.vjp(forward, g_state.params, has_aux=True)

  def generator_update(g_state: ModelState, d_state: ModelState, fake, fake_vjp,
                       g_batch_stats):
    def loss_fn(samples):
      logits, d_batch_stats = forward_d(d_state.params, d_state.batch_stats, samples)
      return gan_loss.generator(logits), d_batch_stats

    (g_loss, d_batch_stats), d_fake = jax.value_and_grad(loss_fn, has_aux=True)(fake)
    (grads,) = fake_vjp(d_fake)
    grads, g_loss = parallel.mean_over_replicas((grads, g_loss), axis_name)
    new_g, ok = _apply_if_finite(g_state, grads,
                                 parallel.mean_over_replicas(g_batch_stats, axis_name),
                                 _all_finite(g_loss, grads))
    d_batch_stats = parallel.mean_over_replicas(d_batch_stats, axis_name)
    new_d = d_state.replace(batch_stats=jax.tree_util.tree_map(
        lambda new, old: jnp.where(ok, new, old), d_batch_stats, d_state.batch_stats))
    return new_g, new_d, dict(g_loss=g_loss, g_grad_norm=optax.tree.norm(grads)), ok

  def train_step(state: GANState, real: Array) -> Tuple[GANState, Metrics]:
    if real.shape[0] % (n_critic * packing):
      raise ValueError(f"the step's batch of {real.shape[0]} samples does not split into "
                       f"n_critic={n_critic} critic batches of whole packs of {packing}")
    step_key = jax.random.fold_in(state.rng, state.step)
    batch = real.shape[0] // n_critic
    per_update = jnp.swapaxes(real.reshape((batch, n_critic) + real.shape[1:]), 0, 1)

    def critic_update(d_state: ModelState, i):
      noise_key, penalty_key = jax.random.split(jax.random.fold_in(step_key, i))
      latents = parallel.per_example_noise(noise_key, (batch, generator.latent_dim), axis_name)
      fake, fake_vjp, g_batch_stats = generator_forward(state.generator, latents)
      d_state, metrics, ok = discriminator_update(d_state, per_update[i], fake, penalty_key)
      return d_state, (fake, fake_vjp, g_batch_stats), metrics, ok

    def early_critic_update(d_state: ModelState, i):
      d_state, _, metrics, ok = critic_update(d_state, i)
      return d_state, (metrics, ok)

    # Updates 0 .. n_critic - 2 run as a loop: one copy of them in the program, which compiles
    # faster than n_critic copies (DCGAN with n_critic=5: 7 s instead of 12). The last one is
    # written out: it also gives the generator update its samples and their forward pass.
    d_state, early = state.discriminator, None
    if n_critic > 1:
      d_state, early = lax.scan(early_critic_update, d_state, jnp.arange(n_critic - 1))
    d_state, generated, last_metrics, ok = critic_update(d_state, n_critic - 1)
    skipped = 1 - ok.astype(jnp.int32)
    d_metrics = jax.tree_util.tree_map(lambda x: x[None], last_metrics)  # (updates,) each
    if early is not None:
      skipped += jnp.sum(1 - early[1].astype(jnp.int32))
      d_metrics = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), early[0], d_metrics)
    g_state, d_state, g_metrics, ok = generator_update(state.generator, d_state, *generated)
    skipped += 1 - ok.astype(jnp.int32)

    ema_params = state.ema_params
    if ema_params is not None:
      ema_params = optax.incremental_update(g_state.params, ema_params,
                                            step_size=1.0 - config.ema_decay)
    new_state = state.replace(generator=g_state, discriminator=d_state, step=state.step + 1,
                              ema_params=ema_params)
    metrics = jax.tree_util.tree_map(jnp.mean, d_metrics)
    metrics = parallel.mean_over_replicas(dict(metrics, **g_metrics), axis_name)
    metrics["nonfinite"] = skipped
    return new_state, metrics

  return train_step
