"""Every test sees 4 CPU devices, so data-parallel code runs here without accelerators, and
compiled programs are cached on disk for the session, so the many tests (and the commands they
start) that build the same train step compile it once.

Compiling is most of the suite's time, and most of a compile is LLVM making machine code of XLA's
fused loops (3.9 of the 4.5 s of a small DCGAN train step; XLA's passes over the program take the
rest). The tests ask LLVM not to optimize that code (``--xla_backend_optimization_level=0``):
the step compiles in 40% less time and the suite runs in about a quarter less. XLA's own
optimizations (fusion, layouts, simplification) still run; the results differ from the default
level's in the last bits only, and commands started by tests inherit the level. Users' runs and
the benchmarks compile at XLA's default level.

The settings must be in place before JAX starts its backend, hence at import time of this file,
which pytest loads before any test module; commands started by tests inherit them.
"""
import atexit
import os
import shutil
import tempfile

from tests.xla_flags import with_cpu_devices

xla_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in xla_flags:  # else: the user's level
  xla_flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = with_cpu_devices(xla_flags, 4)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else: the user's cache, the user's settings
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gan_jax_test_compilations_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
