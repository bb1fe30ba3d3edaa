"""The fully-connected players: PacGAN packing and spectral normalization, against numpy."""
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.models import mlp


def forward_by_hand(params, x, sigmas=None):
  """The discriminator in float64 numpy: leaky ReLU (slope 0.2) hidden layers, each kernel divided
  by ``sigmas[i]`` when given."""
  layers = sorted(params, key=lambda name: int(name.split("_")[1]))
  for i, name in enumerate(layers):
    kernel = np.float64(params[name]["kernel"]) / (1.0 if sigmas is None else sigmas[i])
    x = x @ kernel + np.float64(params[name]["bias"])
    if i < len(layers) - 1:
      x = np.where(x > 0, x, 0.2 * x)
  return x[:, 0]


def test_packing_concatenates_consecutive_samples_into_one_input():
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 3)), np.float64)
  packed = mlp.MLPDiscriminator(width=16, depth=2, packing=3)
  params = packed.init(jax.random.PRNGKey(1), jnp.float32(x))["params"]
  logits = np.asarray(packed.apply({"params": params}, jnp.float32(x)))
  assert logits.shape == (4,)
  # pack i is samples 3i, 3i+1, 3i+2 side by side, in that order
  np.testing.assert_allclose(logits, forward_by_hand(params, x.reshape(4, 9)), rtol=1e-5,
                             atol=1e-6)
  changed = x.copy()
  changed[4] += 1.0  # the middle sample of pack 1
  after = np.asarray(packed.apply({"params": params}, jnp.float32(changed)))
  assert np.flatnonzero(after != logits).tolist() == [1]


def test_spectral_norm_divides_each_kernel_by_its_largest_singular_value():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  critic = mlp.MLPDiscriminator(width=16, depth=2, spectral_norm=True)
  variables = critic.init(jax.random.PRNGKey(1), x)

  @jax.jit
  def power_iteration(batch_stats):  # one power iteration per training call
    _, updates = critic.apply({"params": variables["params"], "batch_stats": batch_stats}, x,
                              train=True, mutable=["batch_stats"])
    return updates["batch_stats"]

  batch_stats = variables["batch_stats"]
  for _ in range(100):
    batch_stats = power_iteration(batch_stats)
  params = variables["params"]
  exact = [np.linalg.svd(np.float64(params[f"Dense_{i}"]["kernel"]), compute_uv=False)[0]
           for i in range(3)]
  stored = [float(batch_stats[f"SpectralNorm_{i}"][f"Dense_{i}/kernel/sigma"]) for i in range(3)]
  np.testing.assert_allclose(stored, exact, rtol=1e-4)
  # in eval mode the stored estimate normalizes: each layer is 1-Lipschitz
  logits = critic.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
  np.testing.assert_allclose(logits, forward_by_hand(params, np.float64(x), exact), rtol=1e-4,
                             atol=1e-6)



def test_every_layer_product_asks_for_full_float32_precision():
  """On TPUs and recent GPUs a default-precision float32 product rounds its operands (bfloat16,
  TF32), which would blur the toy modes (std 0.01); the players' layers ask for HIGHEST, and so
  does the power iteration of spectral norm, whose estimate of sigma rescales every weight."""
  z = jnp.zeros((4, 2))
  precisions = []
  for model in (mlp.MLPGenerator(latent_dim=2, output_dim=2), mlp.MLPDiscriminator(),
                mlp.MLPDiscriminator(spectral_norm=True)):
    variables = model.init(jax.random.PRNGKey(0), z)
    program = jax.make_jaxpr(lambda v: model.apply(v, z, mutable=["batch_stats"]))(variables)
    precisions += [eqn.params["precision"] for eqn in program.jaxpr.eqns
                   if eqn.primitive.name == "dot_general"]
  # 4 layers each; each spectral norm adds 2 products to its vector and 2 to sigma
  assert precisions == [(jax.lax.Precision.HIGHEST,) * 2] * (8 + 4 * 5)
