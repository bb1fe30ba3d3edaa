"""XLA_FLAGS for the commands that tests start with devices of their own."""
import re
from typing import Optional

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def with_cpu_devices(xla_flags: str, count: Optional[int]) -> str:
  """``xla_flags`` with ``count`` fake CPU devices instead of any count it sets; ``None``: no
  count, the command chooses its own."""
  flags = re.sub(rf"{DEVICE_COUNT_FLAG}=\S*", "", xla_flags).split()
  return " ".join(flags + ([f"{DEVICE_COUNT_FLAG}={count}"] if count is not None else []))
