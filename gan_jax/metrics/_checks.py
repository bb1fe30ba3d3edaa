"""Input checks shared by the metrics."""
import numpy as np


def require_finite(values: np.ndarray, name: str) -> np.ndarray:
  """``values`` (an array of one or more dimensions) as given, or ValueError naming how many of
  its rows hold NaN or inf: a metric of them would be NaN, fail inside linear algebra, or, for
  the nearest-neighbour metrics, come out plausible and wrong (NaN distances compare as false)."""
  bad_rows = ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
  if bad_rows.any():
    raise ValueError(f"{name}: {int(bad_rows.sum())} of {len(bad_rows)} rows hold NaN or inf; "
                     "the metrics need finite values")
  return values
