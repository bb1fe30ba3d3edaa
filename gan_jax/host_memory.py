"""Keeps freed host memory in the process, so that XLA's CPU backend reuses its scratch memory.

XLA's CPU runtime allocates the temporaries of every execution as one block (107 MB for the
default DCGAN step) and frees it when the step ends. glibc serves a request that large with fresh
pages from the kernel (from a thread's own arena it has no other way above 64 MB), so every step
page-faults through the whole block again and the kernel zero-fills it: 26,000 faults and about
50 ms of system time per step on a 2-core machine. Making every thread allocate from glibc's main
heap, never mmap, and never trim it keeps the freed block for the next step.

The settings hold for the whole process; memory freed is kept, not returned to the system. With
one arena every allocation takes the same lock, so a process whose many CPU devices run at once
(the vanilla GAN's seeds) is slowed down (2x on grid25): only the DCGAN experiment uses this.
"""
import ctypes
import importlib.metadata
import importlib.util
import os
import platform

# (mallopt parameter from glibc's malloc.h, its GLIBC_TUNABLES name, value)
_SETTINGS = ((-8, "arena_max", 1), (-4, "mmap_max", 0), (-1, "trim_threshold", 2 ** 31 - 1))


def keep_freed_memory() -> bool:
  """Asks glibc's malloc to keep freed memory for reuse (see the module docstring).

  Call it before JAX creates its CPU backend: XLA's threads then allocate from the main heap.
  Threads that have already allocated keep their own arena (importing orbax starts a few; they
  do not allocate XLA's scratch). Returns whether glibc accepted every setting; with another C
  library (e.g. on macOS) nothing changes and it returns False.
  """
  if platform.libc_ver()[0] != "glibc":
    return False
  mallopt = ctypes.CDLL(None).mallopt
  accepted = [mallopt(option, value) == 1 for option, _, value in _SETTINGS]
  return all(accepted)


def only_cpu_backend() -> bool:
  """Whether JAX will run on the CPU alone in this process, judged before it starts (as
  ``keep_freed_memory`` must be): ``JAX_PLATFORMS`` says ``cpu``, or it is unset and no
  accelerator plugin is installed (no ``jax_plugins`` package or entry point, no ``libtpu``).
  On a GPU or TPU the settings would only keep host memory that is never reused."""
  platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return platforms == ["cpu"]
  return not (importlib.metadata.entry_points(group="jax_plugins")
              or any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu")))


def glibc_tunables() -> str:
  """The same settings as a ``GLIBC_TUNABLES`` value, for a process started by someone else."""
  return ":".join(f"glibc.malloc.{name}={value}" for _, name, value in _SETTINGS)
