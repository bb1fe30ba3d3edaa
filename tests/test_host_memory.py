"""host_memory: with glibc told to keep freed memory, a large block is reused without faulting
its pages in again; without, every page of the block faults on every allocation."""
import os
import platform
import subprocess
import sys

import pytest

from gan_jax import host_memory

BLOCK = 100 << 20  # above glibc's largest mmap threshold (32 MiB), like XLA's per-step scratch
PAGES = BLOCK // os.sysconf("SC_PAGE_SIZE")

TOUCH_TWICE = f"""
import ctypes, ctypes.util, resource, sys
from gan_jax import host_memory
if sys.argv[1] == "keep":
  assert host_memory.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def touch():
  block = libc.malloc({BLOCK})
  ctypes.memset(block, 1, {BLOCK})
  libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_of_second_block(mode: str, **tunables) -> int:
  env = {name: value for name, value in os.environ.items()
         if name != "GLIBC_TUNABLES" and not name.startswith("MALLOC_")}
  result = subprocess.run([sys.executable, "-c", TOUCH_TWICE, mode], capture_output=True,
                          text=True, check=True, env=dict(env, **tunables))
  return int(result.stdout)


def transparent_huge_pages_always() -> bool:
  """With THP "always", a fresh block faults once per 2 MiB, not once per page."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[always]" in f.read()
  except OSError:
    return False


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or
                                transparent_huge_pages_always(),
                                reason="counts the page faults of glibc with small pages")


@glibc_only
def test_kept_memory_is_reused_without_page_faults():
  assert page_faults_of_second_block("default") > PAGES // 2
  assert page_faults_of_second_block("keep") < PAGES // 100


@glibc_only
def test_glibc_tunables_have_the_same_effect():
  """What the benchmark gives the PyTorch reference, started as its own process."""
  assert page_faults_of_second_block(
      "default", GLIBC_TUNABLES=host_memory.glibc_tunables()) < PAGES // 100


@pytest.mark.parametrize("platforms, installed, expected", [
    ("cpu", ("libtpu",), True),      # JAX_PLATFORMS decides when it is set
    ("cuda,cpu", (), False),
    ("", (), True),                  # unset: this suite's own install has no accelerator plugin
    ("", ("libtpu",), False),
    ("", ("jax_plugins",), False),   # e.g. jax[cuda12]'s plugin package
])
def test_freed_memory_is_kept_only_where_jax_will_run_on_the_cpu_alone(
    monkeypatch, platforms, installed, expected):
  find_spec = host_memory.importlib.util.find_spec
  monkeypatch.setattr(host_memory.importlib.util, "find_spec",
                      lambda name: object() if name in installed else find_spec(name))
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  assert host_memory.only_cpu_backend() == expected
