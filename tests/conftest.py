"""Every test sees 4 CPU devices, so data-parallel code runs here without accelerators, and
compiled programs are cached on disk for the session, so the many tests (and the commands they
start) that build the same train step compile it once.

The settings must be in place before JAX starts its backend, hence at import time of this file,
which pytest loads before any test module; commands started by tests inherit them.
"""
import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else: the user's cache, the user's settings
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gan_jax_test_compilations_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
