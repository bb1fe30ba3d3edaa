"""Row blocks for the metrics' matrices on the host, so that large feature sets fit in memory."""
from typing import Iterator

BLOCK_ENTRIES = 4_000_000  # matrix entries per block: 32 MB of float64


def row_blocks(num_rows: int, row_length: int) -> Iterator[slice]:
  """Consecutive slices covering ``range(num_rows)``, each of ``BLOCK_ENTRIES // row_length``
  rows (at least one), read when the iteration starts."""
  rows = max(1, BLOCK_ENTRIES // row_length)
  for start in range(0, num_rows, rows):
    yield slice(start, min(start + rows, num_rows))
