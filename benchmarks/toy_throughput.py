"""Vanilla-GAN step throughput on the 2-D targets: `python -m benchmarks.toy_throughput`.

The configuration is that of `../shared/bench/torch_toy_gan.py`: G and D with 3 hidden layers of
128 (ReLU / LeakyReLU(0.2)), non-saturating loss, Adam(1e-3, b1 = 0.5), batch 256, 2-D noise.
Two figures, each printed as a JSON line, the summary last:

* one seed: steps/s of the project's vanilla-GAN program (`experiments.vanilla_gan`: the real
  batch drawn on the device, `--chunk` steps per compiled call, and on a CPU the batch split over
  up to one CPU device per core), after compiling, against the PyTorch reference's training
  steps/s (with `--torch_python`), in `--rounds` rounds that alternate the two (a JSON line
  each); the best round of each is reported, as the DCGAN benchmark does, since this CPU's speed
  drifts within minutes;
* many seeds: whole wall time, compiles included, of `--seeds` runs vmapped into one program
  (`--num_seeds=S`, the seeds split over CPU devices as the experiment does) against the same
  runs one after another in one process (`--num_seeds=1`, each compiled anew, as a loop over
  seeds in a script would), and against the PyTorch reference's sequential seeds.

Each JAX figure is measured in a process of its own that first makes the CPU devices the
experiment would make for that many seeds (`parallel.split_cpu`), or `--cpu_devices` of them as
the experiment's flag of that name does: idle extra CPU devices slow a program that uses only some
of them (one seed on 2 of 5 CPU devices: 333 steps/s, on 2 of 2: 590). Where the two vCPUs share
one core's arithmetic, splitting one seed's batch over them costs more than it gives
(`--cpu_devices=1`; see the README's Performance section).
"""
import json
import os
import sys
import tempfile
import time

import jax
from absl import flags, logging

from benchmarks import commands
from experiments import vanilla_gan
from gan_jax import cli, distributions, parallel

flags.DEFINE_enum("dataset", "ring8", list(distributions.TOY_DATASETS), "The toy target.")
flags.DEFINE_integer("steps", 2000, "Training steps per seed.", lower_bound=1)
flags.DEFINE_integer("chunk", 500, "Steps per compiled call.", lower_bound=1)
flags.register_multi_flags_validator(
    ["steps", "chunk"], lambda values: values["steps"] % values["chunk"] == 0,
    message="--steps must be a multiple of --chunk (each compiled call runs --chunk steps)")
flags.DEFINE_integer("rounds", 3, "Rounds of the one-seed figure; each measures ours (in a "
                     "fresh process) and then, with --torch_python, the reference.", lower_bound=1)
flags.DEFINE_integer("seeds", 10, "Seeds for the vmapped-versus-sequential comparison.",
                     lower_bound=1)
flags.DEFINE_integer("cpu_devices", None, "CPU devices to make, as experiments.vanilla_gan's "
                     "flag (default: as many as it makes by default).", lower_bound=1)
flags.DEFINE_enum("part", None, ["one_seed", "vmapped", "sequential"], "Measure only this "
                  "JAX figure, in this process, and print it as JSON (the benchmark runs each "
                  "part so).")
flags.DEFINE_string("torch_python", None, "A Python with torch==2.13.0, to run the reference.")
flags.DEFINE_string("torch_reference", os.path.join(os.path.dirname(__file__), os.pardir,
                                                    os.pardir, "shared", "bench",
                                                    "torch_toy_gan.py"),
                    "Path of the PyTorch reference script.")
commands.check_reference_flags()
FLAGS = flags.FLAGS


def reference_config(**overrides) -> vanilla_gan.VanillaConfig:
  """The PyTorch reference's settings (VanillaConfig's defaults are those already)."""
  return vanilla_gan.VanillaConfig(dataset=FLAGS.dataset, num_steps=FLAGS.steps,
                                   log_every_steps=FLAGS.chunk, snapshot_every_steps=0,
                                   **overrides)


def one_seed_steps_per_sec() -> float:
  """Steps/s of the compiled chunk for one seed over ``--steps`` steps after a warm-up chunk
  (compile excluded): all of them, as the reference's figure is over all of its steps."""
  config = reference_config()
  data = vanilla_gan.load_data(config.dataset)
  generator, discriminator = vanilla_gan.build_models(config, data.dim)
  mesh = vanilla_gan.seed_mesh(config)
  state, keys, data, run = vanilla_gan.prepare_training(config, data, generator, discriminator,
                                                        mesh)
  state, metrics = run(state, keys[:, 1], data.arrays)  # warm-up
  jax.block_until_ready(metrics)
  chunks = FLAGS.steps // FLAGS.chunk
  start = time.perf_counter()
  for _ in range(chunks):
    state, metrics = run(state, keys[:, 1], data.arrays)
  jax.block_until_ready(metrics)
  return chunks * FLAGS.chunk / (time.perf_counter() - start)


def wall_time(config: vanilla_gan.VanillaConfig) -> float:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    vanilla_gan.train_and_evaluate(config, workdir)
    return time.perf_counter() - start


def torch_reference(seeds: int) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    command = [FLAGS.torch_python, FLAGS.torch_reference, FLAGS.dataset,
               os.path.join(tmp, "samples.npy"), str(seeds), str(FLAGS.steps)]
    return commands.last_json_line(command, "the PyTorch reference")


def measure_part(part: str) -> dict:
  """One JAX figure, on the CPU devices the experiment would make for its seeds (or
  ``--cpu_devices``)."""
  seeds = FLAGS.seeds if part == "vmapped" else 1
  parallel.split_cpu(seeds, reference_config().batch_size, FLAGS.cpu_devices)
  if part == "one_seed":
    return {"steps_per_sec": one_seed_steps_per_sec(), "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(), "devices": jax.device_count()}
  if part == "vmapped":
    return {"wall_s": wall_time(reference_config(num_seeds=seeds))}
  return {"wall_s": sum(wall_time(reference_config(seed=k)) for k in range(FLAGS.seeds))}


def run_part(part: str) -> dict:
  """``measure_part(part)`` in a fresh process with this process's flags."""
  command = [sys.executable, "-m", "benchmarks.toy_throughput", *sys.argv[1:], f"--part={part}"]
  return commands.last_json_line(command, f"part {part}",
                                 cwd=os.path.join(os.path.dirname(__file__), os.pardir))


def main(argv):
  del argv
  if FLAGS.part:
    print(json.dumps(measure_part(FLAGS.part)))
    return
  parts, torch_rates = [], []
  for _ in range(FLAGS.rounds):
    parts.append(run_part("one_seed"))
    line = {"round": len(parts), "steps_per_sec": parts[-1]["steps_per_sec"]}
    if FLAGS.torch_python:
      torch_rates.append(torch_reference(1)["steps_per_sec"])
      line["torch_steps_per_sec"] = torch_rates[-1]
    print(json.dumps(line))
  one_seed = max(parts, key=lambda part: part["steps_per_sec"])
  result = {"framework": "jax", "device": one_seed["device"], "backend": one_seed["backend"],
            "host": commands.host(), "one_seed_devices": one_seed["devices"],
            "dataset": FLAGS.dataset, "steps": FLAGS.steps,
            "batch_size": reference_config().batch_size, "rounds": FLAGS.rounds,
            "steps_per_sec": one_seed["steps_per_sec"]}
  if FLAGS.torch_python:
    result.update(torch_steps_per_sec=max(torch_rates),
                  speedup=result["steps_per_sec"] / max(torch_rates))
  print(json.dumps({"one_seed": result}))

  seeds = FLAGS.seeds
  vmapped = run_part("vmapped")["wall_s"]
  sequential = run_part("sequential")["wall_s"]
  many = {"seeds": seeds, "vmapped_wall_s": vmapped, "sequential_wall_s": sequential,
          "vmapped_speedup": sequential / vmapped}
  if FLAGS.torch_python:
    reference = torch_reference(seeds)
    many.update(torch_sequential_wall_s=reference["wall_s"],
                speedup_vs_torch=reference["wall_s"] / vmapped)
  result["many_seeds"] = many
  logging.info("one seed: %.1f steps/s; %d seeds: vmapped %.1f s, sequential %.1f s",
               result["steps_per_sec"], seeds, vmapped, sequential)
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run(main)
