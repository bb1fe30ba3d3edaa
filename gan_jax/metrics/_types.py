"""Result types shared by the metrics."""
from typing import NamedTuple


class MeanStd(NamedTuple):
  """An estimate averaged over splits or subsets, and its standard deviation over them."""
  mean: float
  std: float
