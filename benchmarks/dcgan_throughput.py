"""DCGAN train-step throughput: `python -m benchmarks.dcgan_throughput --resolution=32`.

Builds the project's real train step (the models, state and step `experiments.dcgan` uses, with
the architecture of the PyTorch examples DCGAN, `../shared/bench/torch_dcgan.py`), compiles it,
warms up, then times whole steps (one D update on a real and a fake batch, one G update) with
`block_until_ready`. With `--torch_python` it also runs the PyTorch reference with the same
settings in the same invocation, alternating with ours, and reports the ratio.

Like `experiments.dcgan`, this process asks glibc to keep freed memory (`gan_jax.host_memory`;
`--nokeep_freed_memory` measures without). The reference runs
twice per round: as shipped, and with the same malloc settings through `GLIBC_TUNABLES`
(PyTorch's CPU allocator frees and re-allocates its large tensors every step too), so the ratio
is reported both ways. With `--dtype=bfloat16` the reference runs under PyTorch's autocast to
bfloat16 (its own mixed precision), so that both compute their products from bfloat16 operands.

The last line printed is one JSON object: images_per_sec (real images consumed per second),
params, compile_s, device, host (CPU model, cores, JAX version), batch_size, resolution,
step_flops (the model's arithmetic per step, ``trainer.step_flops``), model_tflops_per_sec,
model_flop_utilization (with ``--peak_tflops``), ... and, with the reference,
torch_images_per_sec and speedup (the reference as shipped), torch_same_malloc_images_per_sec and
speedup_same_malloc.
"""
import json
import math
import os
import time

import jax
import numpy as np
from absl import flags

from benchmarks import commands
from gan_jax import cli, host_memory, parallel, train_state, train_step, trainer
from gan_jax.models import layers

flags.DEFINE_integer("resolution", 32, "32 or 64 (28 has no PyTorch counterpart).")
flags.register_validator("resolution", lambda size: size in (32, 64),
                         message="--resolution must be 32 or 64")
flags.DEFINE_integer("channels", 1, "Image channels, 1 or 3.")
flags.register_validator("channels", lambda channels: channels in (1, 3),
                         message="--channels must be 1 or 3")
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_integer("width", 64, "ngf = ndf.", lower_bound=1)
flags.DEFINE_integer("steps", 30, "Timed steps per round.", lower_bound=1)
flags.DEFINE_integer("warmup", 5, "Untimed steps after compiling.", lower_bound=0)
flags.DEFINE_integer("rounds", 2, "Rounds; each times ours and, with --torch_python, the "
                     "reference; the best round of each is reported.", lower_bound=1)
flags.DEFINE_enum("conv_method", "auto", list(layers.METHODS), "How the resampling convolutions "
                  "are computed.")
flags.DEFINE_enum("dtype", "float32", list(trainer.DTYPES), "Compute dtype.")
flags.DEFINE_float("peak_tflops", None, "The device's peak TFLOP/s for the compute dtype (e.g. "
                   "989 for an H100/H200 in bfloat16, dense), to report model FLOP utilization.")
flags.register_validator("peak_tflops", lambda peak: peak is None or 0 < peak < math.inf,
                         message="--peak_tflops must be a positive number")
flags.DEFINE_string("torch_python", None, "A Python with torch==2.13.0, to run the reference.")
flags.DEFINE_string("torch_reference", os.path.join(os.path.dirname(__file__), os.pardir,
                                                    os.pardir, "shared", "bench",
                                                    "torch_dcgan.py"),
                    "Path of the PyTorch reference script.")
flags.DEFINE_integer("threads", 2, "Threads for the PyTorch reference.", lower_bound=1)
commands.check_reference_flags()
flags.DEFINE_bool("keep_freed_memory", True, "Ask glibc to keep freed memory, as experiments.dcgan "
                  "does.")
FLAGS = flags.FLAGS

# Runs the script named by argv[2] with autocast to bfloat16 on device argv[1] (thread-local, so
# set in the thread that runs the script). Autocast's cache of bfloat16 weights is emptied only
# when an autocast context exits, which never happens here, so it is off: every forward pass
# casts the current weights, as a `with torch.autocast(...)` per step would.
_TORCH_AUTOCAST = """import runpy, sys, torch
device, sys.argv = sys.argv[1], sys.argv[2:]
torch.set_autocast_enabled(device, True)
torch.set_autocast_dtype(device, torch.bfloat16)
torch.set_autocast_cache_enabled(False)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def build_step():
  """The experiment's config, initial state and jitted train step for the flags, and one fixed
  batch of uniform noise images ``(batch_size, resolution, resolution, channels)``."""
  config = trainer.TrainConfig(resolution=FLAGS.resolution, channels=FLAGS.channels,
                               g_width=FLAGS.width, d_width=FLAGS.width,
                               batch_size=FLAGS.batch_size, conv_method=FLAGS.conv_method,
                               dtype=FLAGS.dtype)
  generator, discriminator = trainer.build_models(config, axis_name=None)
  state = trainer.initial_state(config, generator, discriminator)
  step = parallel.jit_step(train_step.make_train_step(generator, discriminator,
                                                      train_step.StepConfig.of(config)))
  shape = (FLAGS.batch_size, FLAGS.resolution, FLAGS.resolution, FLAGS.channels)
  real = jax.device_put(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
  return config, state, step, real


def time_ours(state, step, real):
  """Runs ``--warmup`` steps, then times ``--steps`` whole steps; returns the state and
  images/s."""
  for _ in range(FLAGS.warmup):
    state, _ = step(state, real)
  jax.block_until_ready(state)  # the metrics come from the same program
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, metrics = step(state, real)
  jax.block_until_ready((state, metrics))
  return state, FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)


def time_torch(same_malloc: bool) -> dict:
  """The PyTorch reference's JSON result for the same settings, run in ``--torch_python``; with
  ``same_malloc``, under glibc settings equal to ``host_memory``'s."""
  device = "cpu" if jax.default_backend() == "cpu" else "cuda"
  autocast = ["-c", _TORCH_AUTOCAST, device] if FLAGS.dtype == "bfloat16" else []
  command = [FLAGS.torch_python, *autocast, FLAGS.torch_reference,
             "--resolution", str(FLAGS.resolution), "--channels", str(FLAGS.channels),
             "--batch_size", str(FLAGS.batch_size), "--width", str(FLAGS.width),
             "--steps", str(FLAGS.steps), "--warmup", str(FLAGS.warmup),
             "--threads", str(FLAGS.threads), "--device", device]
  env = dict(os.environ)
  if same_malloc:  # after any tunables of the caller's, so ours win
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"),
                                                   host_memory.glibc_tunables()]))
  return commands.last_json_line(command, "the PyTorch reference", env=env)


def main(argv):
  del argv
  keeps_freed_memory = (FLAGS.keep_freed_memory and host_memory.only_cpu_backend()
                        and host_memory.keep_freed_memory())
  cli.require(not FLAGS.torch_python or jax.default_backend() in ("cpu", "gpu"),
              f"the PyTorch reference runs on a CPU or an NVIDIA GPU, not on "
              f"{jax.default_backend()}; leave out --torch_python there")
  config, state, step, real = build_step()
  start = time.perf_counter()
  step = step.lower(state, real).compile()
  compile_s = time.perf_counter() - start
  flops = trainer.step_flops(config)  # before the timing: a failure then costs no measurement
  ours, torch, torch_same = [], [], []
  for _ in range(FLAGS.rounds):
    if FLAGS.torch_python:
      torch.append(time_torch(same_malloc=False))
      if keeps_freed_memory:  # the reference under the same malloc settings as ours
        torch_same.append(time_torch(same_malloc=True))
    state, rate = time_ours(state, step, real)
    ours.append(rate)
    print(json.dumps({"round": len(ours), "images_per_sec": rate,
                      **({"torch_images_per_sec": torch[-1]["images_per_sec"]} if torch else {}),
                      **({"torch_same_malloc_images_per_sec": torch_same[-1]["images_per_sec"]}
                         if torch_same else {})}))
  steps_per_sec = max(ours) / FLAGS.batch_size
  model_tflops = flops * steps_per_sec / 1e12
  result = {
      "framework": "jax", "device": str(jax.devices()[0].device_kind), "backend":
      jax.default_backend(), "host": commands.host(), "resolution": FLAGS.resolution,
      "channels": FLAGS.channels,
      "batch_size": FLAGS.batch_size, "width": FLAGS.width, "dtype": FLAGS.dtype,
      "conv_method": FLAGS.conv_method, "keeps_freed_memory": keeps_freed_memory,
      "images_per_sec": max(ours),
      "steps_per_sec": steps_per_sec, "compile_s": compile_s,
      "step_flops": flops, "model_tflops_per_sec": model_tflops,
      "params": {"generator": train_state.count_params(state.generator.params),
                 "discriminator": train_state.count_params(state.discriminator.params)},
  }
  if FLAGS.peak_tflops is not None:
    result["model_flop_utilization"] = model_tflops / FLAGS.peak_tflops
  if torch:
    best = max(torch, key=lambda r: r["images_per_sec"])
    result.update(torch_autocast_bfloat16=FLAGS.dtype == "bfloat16",
                  torch_images_per_sec=best["images_per_sec"], torch_threads=best["threads"],
                  torch_params=best["params"], speedup=max(ours) / best["images_per_sec"])
  if torch_same:
    best_same = max(r["images_per_sec"] for r in torch_same)
    result.update(torch_same_malloc_images_per_sec=best_same,
                  speedup_same_malloc=max(ours) / best_same)
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
