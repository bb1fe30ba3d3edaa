"""Pictures written to the workdir: image grids and training curves."""
import io
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from gan_jax import run_log


# The panels of a GAN's training curves: panel title -> the metrics drawn in it.
TRAINING_CURVES = {"losses": ("d_loss", "g_loss"), "discriminator outputs": ("d_real", "d_fake"),
                   "gradient norms": ("d_grad_norm", "g_grad_norm")}


def image_grid(images: np.ndarray, columns: Optional[int] = None, padding: int = 2) -> np.ndarray:
  """Tiles images ``(N, H, W, C)`` in [-1, 1] into one uint8 picture ``(rows*(H+p)+p, ..., C)``."""
  images = np.asarray(images, np.float32)
  n, height, width, channels = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding,
                  channels), 255, np.uint8)
  pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  for i, image in enumerate(pixels):
    top = padding + (i // columns) * (height + padding)
    left = padding + (i % columns) * (width + padding)
    grid[top:top + height, left:left + width] = image
  return grid


def save_image_grid(images: np.ndarray, path: str, columns: Optional[int] = None,
                    scale: int = 2) -> None:
  """Writes ``image_grid(images)`` as a PNG, each pixel ``scale`` x ``scale`` screen pixels."""
  grid = image_grid(images, columns)
  picture = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  buffer = io.BytesIO()
  picture.save(buffer, format="PNG")
  run_log.write_file(path, buffer.getvalue())


def _figure(rows: int, columns: int, figsize: Tuple[float, float]):
  """A new figure and its axes ``(rows, columns)``. Built from matplotlib's ``Figure``, not
  pyplot: no global backend or figure list to change in the caller's process (a notebook keeps
  its own), and matplotlib loads at the first picture, not with every command's imports."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize)
  return fig, fig.subplots(rows, columns, squeeze=False)


def _save_figure(fig, path: str) -> None:
  """Writes ``fig`` (in the format of the file's extension) whole or not at all, as every file
  of a run is (a full disk is then the run's one error line)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=os.path.splitext(path)[1][1:] or "png", dpi=100)
  run_log.write_file(path, buffer.getvalue())


def _marker(points: int) -> Optional[str]:
  """Dots where a line has too few points to show (one point draws no line)."""
  return "." if points < 2 else None


def plot_curves(rows: Sequence[Dict[str, float]], groups: Dict[str, Sequence[str]], path: str,
                x_key: str = "step") -> None:
  """One panel per group of metrics against ``x_key``; ``rows`` as in ``metrics.jsonl``."""
  fig, axes = _figure(1, len(groups), figsize=(5 * len(groups), 3.5))
  for ax, (title, keys) in zip(axes[0], groups.items()):
    for key in keys:
      points = [(r[x_key], r[key]) for r in rows if key in r]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=key, linewidth=1, marker=_marker(len(xs)), markersize=3)
    ax.set_title(title)
    ax.set_xlabel(x_key)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, path)


def _panel_grid(num_panels: int, panel_size: float, columns: Optional[int] = None):
  """A figure with ``num_panels`` axes in rows of ``columns``; unused axes are hidden."""
  columns = columns or min(num_panels, 5)
  rows = math.ceil(num_panels / columns)
  fig, axes = _figure(rows, columns, figsize=(panel_size * columns, panel_size * rows))
  for ax in axes.flat[num_panels:]:
    ax.set_visible(False)
  return fig, axes.flat[:num_panels]


def plot_samples_over_modes(samples: np.ndarray, means: np.ndarray, stds: np.ndarray, path: str,
                            titles: Optional[Sequence[str]] = None, threshold: float = 3.0) -> None:
  """One scatter panel per seed: samples ``(num_seeds, n, 2)`` over the modes ``(K, 2)``.

  Each mode is drawn as a circle of radius ``threshold * std``: the samples inside are the
  high-quality ones of the mode metrics.
  """
  from matplotlib import patches
  samples = np.asarray(samples)
  lo, hi = means.min(axis=0), means.max(axis=0)
  margin = 0.25 * float(np.max(hi - lo))
  fig, axes = _panel_grid(len(samples), 3.2)
  for i, (ax, points) in enumerate(zip(axes, samples)):
    for centre, std in zip(means, stds):
      ax.add_patch(patches.Circle(centre, threshold * std, fill=False, color="tab:red",
                                  linewidth=0.6, zorder=1))
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.3, color="tab:blue", linewidths=0,
               zorder=2)
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(lo[1] - margin, hi[1] + margin)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=6)
    if titles is not None:
      ax.set_title(titles[i], fontsize=8)
  fig.tight_layout()
  _save_figure(fig, path)


def plot_seed_curves(steps: np.ndarray, curves: Dict[str, np.ndarray],
                     groups: Dict[str, Sequence[str]], path: str) -> None:
  """One panel per group; each metric ``(T, num_seeds)`` drawn as one thin line per seed.

  Args:
    steps: ``(T,)`` x values.
    curves: metric name -> values ``(T, num_seeds)``.
    groups: panel title -> names of the metrics drawn in it (one colour each).
    path: PNG file to write.
  """
  fig, axes = _figure(1, len(groups), figsize=(5 * len(groups), 3.5))
  for ax, (title, keys) in zip(axes[0], groups.items()):
    for colour, key in zip([f"C{i}" for i in range(len(keys))], keys):  # the colour cycle
      values = np.asarray(curves[key])
      ax.plot(steps, values, color=colour, linewidth=0.7, alpha=0.6, marker=_marker(len(steps)),
              markersize=3)
      ax.plot([], [], color=colour, label=key)  # one legend entry for all seeds
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, path)


def plot_discriminator_fits(x: np.ndarray, panels: Sequence[dict], path: str) -> None:
  """One panel per case: a trained discriminator against the closed-form D* on a 1-D grid.

  Args:
    x: grid ``(n,)``.
    panels: one dict per case with ``title`` and arrays ``(n,)``: ``p_data``, ``p_g`` (densities,
      drawn scaled to a peak of 1), ``d`` (trained D), ``d_star`` (closed form) and ``region``
      (bool, where the error is measured; shaded).
    path: PNG file to write.
  """
  fig, axes = _panel_grid(len(panels), 4.5, columns=len(panels))
  for ax, panel in zip(axes, panels):
    scale = max(panel["p_data"].max(), panel["p_g"].max())
    ax.fill_between(x, 0, panel["p_data"] / scale, alpha=0.25, color="tab:blue",
                    label="p_data (scaled)")
    ax.fill_between(x, 0, panel["p_g"] / scale, alpha=0.25, color="tab:orange",
                    label="p_g (scaled)")
    ax.fill_between(x, -0.06, -0.02, where=panel["region"], color="0.6", label="region with mass")
    ax.plot(x, panel["d_star"], "k--", linewidth=1.5, label="D* = p_data / (p_data + p_g)")
    ax.plot(x, panel["d"], color="tab:red", linewidth=1, label="D trained")
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(panel["title"], fontsize=8)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  _save_figure(fig, path)


def plot_saturation(runs: Dict[str, Dict[str, np.ndarray]], data_mean: float, path: str,
                    frozen_steps: int = 0) -> None:
  """The generator's gradient norm against D(G(z)), and where each loss takes the generator.

  Args:
    runs: loss name -> ``d_fake`` and ``g_grad_norm`` per step ``(T,)``, and ``steps``,
      ``sample_mean`` ``(R,)``: the generator's sample mean at some steps.
    data_mean: the data mean, drawn as the target of the last panel.
    path: PNG file to write.
    frozen_steps: the first steps, in which the generator did not move (shaded).
  """
  fig, axes = _figure(1, 3, figsize=(15, 4))
  axes = axes[0]
  for ax in axes[1:]:
    if frozen_steps:
      ax.axvspan(0, frozen_steps, color="0.85", label="generator frozen")
  for colour, (loss, run) in zip(("tab:red", "tab:green", "tab:blue"), runs.items()):
    steps = np.arange(1, len(run["d_fake"]) + 1)
    axes[0].scatter(run["d_fake"], run["g_grad_norm"], s=3, color=colour, alpha=0.5, label=loss)
    axes[1].plot(steps, run["d_fake"], color=colour, linewidth=1, label=loss)
    axes[2].plot(run["steps"], run["sample_mean"], color=colour, linewidth=1.5, label=loss)
  axes[0].set(xscale="log", yscale="log", xlabel="mean D(G(z))",
              ylabel="generator gradient norm", title="gradient vs discriminator confidence")
  axes[1].set(yscale="log", xlabel="step", ylabel="mean D(G(z))",
              title="discriminator output on samples")
  axes[2].axhline(data_mean, color="k", linestyle="--", linewidth=1, label="data mean")
  axes[2].set(xlabel="step", ylabel="mean of G(z)", title="where the generator goes")
  for ax in axes:
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _save_figure(fig, path)
