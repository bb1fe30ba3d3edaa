"""Every test sees 4 CPU devices, so data-parallel code runs here without accelerators.

The flag must be set before JAX starts its backend, hence at import time of this file, which
pytest loads before any test module.
"""
import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=4"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
