"""DCGAN modules: the PyTorch reference's parameter counts, eval mode, and the fast resampling
convolutions equal to Flax's. (Sample shapes at every resolution are checked by the experiment
runs of test_dcgan_experiment.)"""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import trainer
from gan_jax.models import dcgan, layers
from gan_jax.train_state import count_params


def init(module, x):
  return module.init(jax.random.PRNGKey(0), x, train=False)


def test_parameter_counts_equal_the_pytorch_reference():
  """../shared/bench/torch_dcgan.py at 32x32x1, ngf = ndf = 64, nz = 100."""
  g = dcgan.Generator(resolution=32, channels=1, width=64, latent_dim=100)
  d = dcgan.Discriminator(resolution=32, width=64)
  shapes = lambda module, x: jax.eval_shape(lambda x: init(module, x), x)["params"]  # no compute
  assert count_params(shapes(g, jnp.zeros((1, 100)))) == 1_066_880
  assert count_params(shapes(d, jnp.zeros((1, 32, 32, 1)))) == 661_248


def products_per_dim(n_in, n_out, kernel=4, stride=2, padding=1):
  """Products of a strided convolution from ``n_in`` to ``n_out`` pixels along one dimension that
  meet the input, not the padding; a transposed convolution from n_out to n_in does the same."""
  return sum(0 <= o * stride - padding + k < n_in for o in range(n_out) for k in range(kernel))


@pytest.mark.parametrize("conv_method", ["xla", "matmul"])
def test_step_flops_are_the_models_products_whichever_conv_method(conv_method):
  """The closed form at 32x32x1, widths 64, latent 100: multiply-adds per sample of each layer;
  then one step is G forward; D forward, weight and input gradients (not D's first layer's) on
  real and fake; D forward and all input gradients on fake; G weight and input gradients (not
  its first layer's)."""
  w, batch = 64, 64
  g_first = 100 * 16 * 4 * w
  g = g_first + (products_per_dim(8, 4) ** 2 * 4 * w * 2 * w
                 + products_per_dim(16, 8) ** 2 * 2 * w * w + products_per_dim(32, 16) ** 2 * w)
  d_first = products_per_dim(32, 16) ** 2 * w
  d = d_first + (products_per_dim(16, 8) ** 2 * w * 2 * w
                 + products_per_dim(8, 4) ** 2 * 2 * w * 4 * w + 16 * 4 * w)
  multiply_adds = g + 2 * (d + d + d - d_first) + d + d + g + g - g_first
  config = trainer.TrainConfig(resolution=32, channels=1, g_width=w, d_width=w, batch_size=batch,
                               conv_method=conv_method)
  # the rest is elementwise work (batch norm, activations, Adam): under 1.5%
  np.testing.assert_allclose(trainer.step_flops(config), 2 * batch * multiply_adds, rtol=0.015)


def test_eval_mode_uses_running_statistics():
  g = dcgan.Generator(resolution=28, width=8, latent_dim=16)
  z = jax.random.normal(jax.random.PRNGKey(1), (8, 16))
  variables = init(g, z)
  _, updates = g.apply(variables, z * 3 + 1, train=True, mutable=["batch_stats"])
  trained = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
  # momentum 0.9 (flax's convention; PyTorch calls it 0.1): after one more identical batch the
  # running statistics have moved 1 - 0.9^2 = 0.19 of the way, 1.9 times the first move's 0.1.
  _, again = g.apply(trained, z * 3 + 1, train=True, mutable=["batch_stats"])
  first, second = (jax.tree_util.tree_map(jnp.subtract, stats["batch_stats"],
                                          variables["batch_stats"]) for stats in (updates, again))
  chex.assert_trees_all_close(second, jax.tree_util.tree_map(lambda x: 1.9 * x, first),
                              rtol=1e-5, atol=1e-7)
  whole = g.apply(trained, z, train=False)
  # each sample is independent of the rest of the batch in eval mode ...
  np.testing.assert_allclose(g.apply(trained, z[:1], train=False), whole[:1], atol=1e-6)
  # ... depends on the running statistics ...
  assert float(jnp.max(jnp.abs(g.apply(variables, z, train=False) - whole))) > 1e-3
  # ... and differs from normalizing with the batch's own statistics.
  batch_mode, _ = g.apply(trained, z, train=True, mutable=["batch_stats"])
  assert float(jnp.max(jnp.abs(batch_mode - whole))) > 1e-3


def assert_same_values_and_gradients(fast, reference, params, x, fast_params=None):
  """``fast`` and ``reference`` agree in outputs and in gradients w.r.t. parameters and input."""
  fast_params = params if fast_params is None else fast_params
  np.testing.assert_allclose(fast.apply(fast_params, x), reference.apply(params, x), atol=1e-5)
  grad = lambda f, p: jax.grad(lambda p, x: jnp.sum(jnp.sin(f.apply(p, x))), argnums=(0, 1))(p, x)
  for a, b in zip(jax.tree_util.tree_leaves(grad(fast, fast_params)),
                  jax.tree_util.tree_leaves(grad(reference, params))):
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 7, 5, 8)])
def test_matmul_upconv_equals_flax_conv_transpose(shape):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  reference = nn.ConvTranspose(6, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                               use_bias=False)
  params = reference.init(jax.random.PRNGKey(1), x)
  fast = layers.UpConv(6, method="matmul")
  assert jax.tree_util.tree_map(jnp.shape, fast.init(jax.random.PRNGKey(2), x)) == \
      jax.tree_util.tree_map(jnp.shape, params)  # interchangeable checkpoints
  assert_same_values_and_gradients(fast, reference, params, x)


def test_matmul_downconv_equals_flax_strided_conv():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
  reference = nn.Conv(5, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)
  params = reference.init(jax.random.PRNGKey(1), x)
  assert_same_values_and_gradients(layers.DownConv(5, method="matmul"), reference, params, x)
  assert_same_values_and_gradients(layers.DownConv(5, method="xla"), reference, params, x)


def test_scatter_windows_is_the_adjoint_of_gather_windows():
  """<gather(x), w> = <x, scatter(w)> in float64, for every x and w."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4, 3), jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 2, 48), jnp.float64)
    np.testing.assert_allclose(jnp.vdot(layers.gather_windows(x), w),
                               jnp.vdot(x, layers.scatter_windows(w)), rtol=1e-12)


@pytest.mark.parametrize("shape, channels", [((2, 3, 5, 4), 3), ((1, 4, 4, 8), 16)])
def test_scatter_by_phases_equals_the_scatter_of_products(shape, channels):
  """The phase form (bfloat16 transposed convolutions) is the same linear map, in float64."""
  with jax.enable_x64():
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.float64)
    matrix = jax.random.normal(jax.random.PRNGKey(1), (16 * channels, shape[-1]), jnp.float64)
    np.testing.assert_allclose(layers.scatter_by_phases(x, matrix, jnp.float64),
                               layers.scatter_windows(x @ matrix.T), rtol=1e-12, atol=1e-12)


def rounded_to_bfloat16(tree):
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16).astype(jnp.float64), tree)


BFLOAT16_CASES = {  # (layer with bfloat16 operands, its float64 reference, input shape)
    # 16 output channels take the phase form forward, 32 input channels backward.
    "upconv_phases": (layers.UpConv(16, "matmul", jnp.bfloat16),
                      layers.UpConv(16, "xla", jnp.float64), (2, 3, 5, 4)),
    "upconv_scatter": (layers.UpConv(3, "matmul", jnp.bfloat16),
                       layers.UpConv(3, "xla", jnp.float64), (2, 3, 5, 4)),
    "downconv_phases": (layers.DownConv(5, "matmul", jnp.bfloat16),
                        layers.DownConv(5, "xla", jnp.float64), (2, 6, 4, 32)),
    "downconv_scatter": (layers.DownConv(5, "matmul", jnp.bfloat16),
                         layers.DownConv(5, "xla", jnp.float64), (2, 6, 4, 3)),
    "whole_image_conv": (layers.WholeImageConv(2, jnp.bfloat16),
                         layers.WholeImageConv(2, jnp.float64), (3, 4, 4, 5)),
    "dense": (nn.Dense(7, use_bias=False, dot_general=layers.wide_dot_general(jnp.bfloat16)),
              nn.Dense(7, use_bias=False), (3, 6)),
}


@pytest.mark.parametrize("case", BFLOAT16_CASES)
def test_bfloat16_layers_round_operands_and_accumulate_in_float32(case):
  """Values, weight- and input-gradients equal float64 products of bfloat16-rounded operands
  (inputs, kernel, output cotangent), up to float32 round-off: nothing else is rounded."""
  fast, reference, shape = BFLOAT16_CASES[case]
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  params = fast.init(jax.random.PRNGKey(1), x)
  y, pullback = jax.vjp(fast.apply, params, x)
  dy = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  grads = pullback(dy)
  assert y.dtype == jnp.float32
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))
  with jax.enable_x64():
    y64, pullback64 = jax.vjp(reference.apply, rounded_to_bfloat16(params),
                              rounded_to_bfloat16(x))
    grads64 = pullback64(rounded_to_bfloat16(dy))
  for ours, exact in zip(jax.tree_util.tree_leaves((y, grads)),
                         jax.tree_util.tree_leaves((y64, grads64))):
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-5 * np.max(np.abs(exact)))


@pytest.mark.parametrize("dtype, channels, phases", [(jnp.bfloat16, 16, True),
                                                     (jnp.bfloat16, 3, False),
                                                     (jnp.float32, 16, False)])
def test_scatter_takes_the_phase_form_for_bfloat16_and_16_channels(dtype, channels, phases):
  """The phase form is one batched product (four parities); the scatter form a plain one."""
  x, matrix = jnp.ones((2, 3, 3, 8)), jnp.ones((16 * channels, 8))
  jaxpr = jax.make_jaxpr(lambda x, m: layers.scatter_matmul(x, m, dtype))(x, matrix)
  assert [eqn.params["dimension_numbers"][1] != ((), ())
          for eqn in equations(jaxpr.jaxpr) if eqn.primitive.name == "dot_general"] == [phases]


def equations(jaxpr):
  """Every equation of ``jaxpr`` and of the jaxprs nested in it (custom VJPs, pjit)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      nested = getattr(param, "jaxpr", param)
      if hasattr(nested, "eqns"):
        yield from equations(nested)


@pytest.mark.parametrize("layer, shape", [(layers.UpConv, (2, 3, 5, 4)),
                                          (layers.DownConv, (2, 6, 4, 4))])
def test_matmul_forms_have_xla_second_derivatives(layer, shape):
  """R1 and the gradient penalty differentiate an input-gradient with respect to the weights."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  fast, reference = layer(3, method="matmul"), layer(3, method="xla")
  params = reference.init(jax.random.PRNGKey(1), x)

  def penalty_grads(module):
    def penalty(p):
      grad_x = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(p, x))))(x)
      return jnp.sum(grad_x ** 2)
    return jax.grad(penalty)(params)["params"]["kernel"]

  np.testing.assert_allclose(penalty_grads(fast), penalty_grads(reference), rtol=1e-4, atol=1e-6)


def test_whole_image_conv_equals_a_valid_flax_conv():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 5))
  reference = nn.Conv(2, (4, 4), padding="VALID", use_bias=False)
  params = reference.init(jax.random.PRNGKey(1), x)
  fast = layers.WholeImageConv(2)
  assert jax.tree_util.tree_map(jnp.shape, fast.init(jax.random.PRNGKey(2), x)) == \
      jax.tree_util.tree_map(jnp.shape, params)
  assert_same_values_and_gradients(fast, nn.Sequential([reference, lambda y: y[:, 0, 0]]),
                                   {"params": {"layers_0": params["params"]}}, x,
                                   fast_params=params)


def train_mode_samples(generator, variables, z):
  """Samples with batch statistics: at initialization they spread over about [-0.5, 0.5] (with
  the running statistics they would be within 1e-3 of 0, too small to compare)."""
  return generator.apply(variables, z, train=True, mutable=["batch_stats"])[0]


def test_models_agree_across_conv_methods():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
  g_matmul = dcgan.Generator(resolution=32, width=8, latent_dim=16, conv_method="matmul")
  variables = init(g_matmul, z)
  fast = train_mode_samples(g_matmul, variables, z)
  assert float(jnp.std(fast)) > 0.05
  np.testing.assert_allclose(fast, train_mode_samples(g_matmul.clone(conv_method="xla"),
                                                      variables, z), atol=1e-6)


@pytest.mark.parametrize("normalization", dcgan.D_NORMS)
def test_only_the_batch_norm_discriminator_mixes_the_images_of_a_batch(normalization):
  """In training, each logit depends on its own image only (so the gradient of the summed logits,
  which the penalties differentiate, is each image's own input gradient), unless batch norm ties
  the logits to the batch; the layer norm normalizes each image over height, width and
  channels."""
  d = dcgan.Discriminator(resolution=28, width=4, normalization=normalization)
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 28, 28, 1))
  variables = init(d, images)
  logits = jax.jit(lambda x: d.apply(variables, x, train=True, mutable=["batch_stats"])[0])
  others_changed = images.at[1:].set(jax.random.normal(jax.random.PRNGKey(2), (5, 28, 28, 1)))
  change = float(jnp.abs(logits(others_changed)[0] - logits(images)[0]))
  scale = float(jnp.max(jnp.abs(logits(images))))
  if normalization == "batch":
    assert change > 1e-3 * scale and not d.scores_examples_independently
  else:
    assert change <= 1e-6 * scale and d.scores_examples_independently
  if normalization == "layer":
    hidden = jax.random.normal(jax.random.PRNGKey(2), (2, 7, 7, 8)) * 3 + 5
    out = dcgan._layer_norm().apply({"params": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}},
                                    hidden)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(1, 2, 3)), 1, rtol=1e-3)


def test_spectral_discriminator_divides_every_kernel_by_its_largest_singular_value():
  """Once the power iteration (one per training call) has converged, the spectral discriminator
  is the plain one with every kernel, as a ``(kh * kw * in, out)`` matrix, divided by its largest
  singular value (float64 SVD); its parameters are the plain one's."""
  d = dcgan.Discriminator(resolution=28, width=4, normalization="spectral")
  plain = d.clone(normalization="none")
  images = jax.random.normal(jax.random.PRNGKey(1), (6, 28, 28, 1))
  variables = init(d, images)
  chex.assert_trees_all_equal_shapes(variables["params"], init(plain, images)["params"])
  train_call = jax.jit(lambda v: d.apply(v, images, train=True, mutable=["batch_stats"])[1])
  for _ in range(200):
    variables = dict(variables, **train_call(variables))
  largest = lambda k: np.linalg.svd(np.float64(k).reshape(-1, k.shape[-1]), compute_uv=False)[0]
  kernels = {path[0].key: k for path, k in
             jax.tree_util.tree_flatten_with_path(variables["params"])[0] if k.ndim > 1}
  assert len(kernels) == 3  # two strided convolutions and the whole-image one
  sigmas = {name.split("/")[0]: float(value) for stats in variables["batch_stats"].values()
            for name, value in stats.items() if name.endswith("/sigma")}
  assert sorted(sigmas) == sorted(kernels)
  for name, kernel in kernels.items():
    np.testing.assert_allclose(sigmas[name], largest(kernel), rtol=1e-4)
  normalized = jax.tree_util.tree_map(lambda k: k / largest(k) if k.ndim > 1 else k,
                                      variables["params"])
  logits = d.apply(variables, images, train=False)
  assert float(jnp.std(logits)) > 1e-3
  np.testing.assert_allclose(logits, plain.apply({"params": normalized}, images, train=False),
                             rtol=1e-4, atol=1e-6)


def test_unsupported_resolution_names_the_choices():
  with pytest.raises(ValueError, match="28, 32, 64"):
    dcgan.resolution_layout(48)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
  g32 = dcgan.Generator(resolution=32, width=8, latent_dim=16)
  g16 = g32.clone(dtype=jnp.bfloat16)
  variables = init(g32, z)
  assert jax.tree_util.tree_map(lambda x: x.dtype, init(g16, z)) == \
      jax.tree_util.tree_map(lambda x: x.dtype, variables)  # params stay float32
  out16 = train_mode_samples(g16, variables, z)
  out32 = train_mode_samples(g32, variables, z)
  assert out16.dtype == jnp.float32 and float(jnp.max(jnp.abs(out32))) > 0.3
  # bfloat16 operands keep ~3 significant digits (measured: 0.4% of the largest sample)
  np.testing.assert_allclose(out16, out32, atol=0.01 * float(jnp.max(jnp.abs(out32))))
  d16 = dcgan.Discriminator(resolution=32, width=8, dtype=jnp.bfloat16)
  logits = d16.apply(init(d16, out16), out16, train=False)
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))
