"""Pictures: the grid's pixels and layout, curves that show single points, one row per seed."""
import errno

import numpy as np
import pytest
from PIL import Image

from experiments import vanilla_gan
from gan_jax import plotting, run_log, trainer
from gan_jax.errors import RunError


def test_image_grid_places_each_image_scaled_to_uint8_between_white_padding():
  images = np.stack([np.full((3, 2, 1), v, np.float32) for v in (-1.0, 0.0, 1.0)])
  grid = plotting.image_grid(images, columns=2, padding=1)
  assert grid.shape == (2 * (3 + 1) + 1, 2 * (2 + 1) + 1, 1) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[1:4, 1:3], 0)  # -1 -> black
  np.testing.assert_array_equal(grid[1:4, 4:6], 128)  # 0 -> round(127.5)
  np.testing.assert_array_equal(grid[5:8, 1:3], 255)  # 1 -> white, second row
  cells = np.zeros(grid.shape[:2], bool)
  for top, left in ((1, 1), (1, 4), (5, 1)):
    cells[top:top + 3, left:left + 2] = True
  assert np.all(grid[~cells] == 255)  # padding and the empty fourth cell are white


def blue_pixels(path) -> int:
  """Pixels of matplotlib's first colour, also blended into white (the seed lines' alpha)."""
  red, _, blue = np.moveaxis(np.asarray(Image.open(path).convert("RGB")).astype(int), -1, 0)
  return int(np.sum(blue - red > 40))


def test_a_curve_of_one_point_is_drawn_as_a_dot(tmp_path):
  """One logged step gives lines of one point, which draw nothing; they get markers."""
  groups = {"loss": ["d_loss"]}
  plotting.plot_seed_curves(np.array([500]), {"d_loss": np.full((1, 3), np.nan)}, groups,
                            str(tmp_path / "empty.png"))  # the legend's blue line only
  plotting.plot_seed_curves(np.array([500]), {"d_loss": np.array([[0.5, 0.6, 0.7]])}, groups,
                            str(tmp_path / "dots.png"))
  assert blue_pixels(tmp_path / "dots.png") > blue_pixels(tmp_path / "empty.png") + 10


def test_mnist_pictures_start_each_seed_on_a_new_row(tmp_path):
  """3 seeds of 20 digits in rows of 16: 2 rows each, the second padded with gray cells."""
  samples = np.full((3, 20, 28, 28, 1), -1.0, np.float32)
  samples[1] = 1.0  # seed 1 white
  data = vanilla_gan.load_data("mnist")
  vanilla_gan.save_pictures(samples, data, np.arange(3), str(tmp_path / "digits.png"))
  picture = np.asarray(Image.open(tmp_path / "digits.png"))[::2, ::2]  # undo the 2x scale
  side = 28 + 2
  assert picture.shape[0] == 6 * side + 2  # 3 seeds x 2 rows
  rows = [picture[2 + r * side:2 + r * side + 28, 2:2 + 28] for r in range(6)]
  assert [int(row.mean()) for row in rows] == [0, 0, 255, 255, 0, 0]  # seed by seed
  last_of_seed_0 = picture[2 + side:2 + side + 28, 2 + 4 * side:2 + 4 * side + 28]
  assert np.all(last_of_seed_0 == 128)  # the 5th cell of row 2: after 16 + 4 digits, gray


def test_curves_show_fid_over_training_once_a_run_was_scored_twice():
  rows = [{"step": 100, "d_loss": 1.0}, {"step": 100, "fid": 40.0, "real_fid": 3.3},
          {"step": 200, "d_loss": 0.9}]
  assert trainer.curve_panels(rows) == plotting.TRAINING_CURVES  # one score: no curve to draw
  rows.append({"step": 200, "fid": 30.0, "real_fid": 3.3})
  panels = trainer.curve_panels(rows)
  assert panels["FID (lower is better)"] == ("fid", "real_fid")
  assert {k: v for k, v in panels.items() if k in plotting.TRAINING_CURVES} == \
      plotting.TRAINING_CURVES


def test_a_picture_that_cannot_be_written_is_a_run_error(tmp_path, monkeypatch):
  """A full disk while a sample grid or the curves are written is the run's one error line (it
  was a traceback from inside PIL). Pictures are written whole or not at all, as every file of a
  run (``run_log.write_file``)."""
  def full_disk(path, content):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(run_log, "_replace_file", full_disk)
  for draw, name in [
      (lambda path: plotting.save_image_grid(np.zeros((4, 8, 8, 1)), path), "grid.png"),
      (lambda path: plotting.plot_curves([{"step": 1, "d_loss": 1.0}], {"losses": ("d_loss",)},
                                         path), "curves.png")]:
    with pytest.raises(RunError, match=f"could not write .*{name} .*No space left on device"):
      draw(str(tmp_path / name))
    assert not (tmp_path / name).exists()
