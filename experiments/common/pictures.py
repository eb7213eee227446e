"""Image grids and PNGs of a VAE's pictures (`vae.evaluate.pictures`).

Writes prior_samples.png (10 x 10 samples E[x|z], z ~ p(z), the model's prior),
reconstructions.png (test images above their reconstructions) and
inpainting.png (one row per image: original, observed top half, the
importance-weighted mean of the bottom half, single completions).
"""

import numpy as np

from experiments.common import outputs

IMAGE_SHAPE = (28, 28)


def image_grid(images: np.ndarray, rows: int, cols: int,
               pad: int = 1) -> np.ndarray:
  """Tiles [rows·cols, 784] images into one [rows·29+1, cols·29+1] array."""
  images = np.asarray(images).reshape((-1,) + IMAGE_SHAPE)
  h, w = IMAGE_SHAPE
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
  for i, image in enumerate(images[:rows * cols]):
    r, c = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + c * (w + pad):pad + c * (w + pad) + w] = image
  return grid


def _save(run: outputs.Run, grid, title, name, col_labels=None) -> str:
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(grid.shape[1] / 29 * 0.9 + 0.6,
                                  grid.shape[0] / 29 * 0.9 + 0.6))
  ax.imshow(grid, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  ax.set_title(title, fontsize=8)
  ax.set_xticks([] if col_labels is None else
                [14.5 + 29 * i for i in range(len(col_labels))])
  if col_labels is not None:
    ax.set_xticklabels(col_labels, fontsize=6, rotation=90)
  ax.set_yticks([])
  return run.save_figure(fig, name)


def save_pictures(run: outputs.Run, drawn: dict[str, np.ndarray]
                  ) -> list[str]:
  """Writes the three PNGs of `drawn` (`vae.evaluate.pictures`) into `run`."""
  x, n = drawn['images'], len(drawn['images'])
  paths = [_save(run, image_grid(drawn['prior_samples'], 10, 10),
                 "samples from the prior: E[x|z], z ~ p(z) (the model's prior)",
                 'prior_samples.png')]
  pairs = np.concatenate([x, drawn['reconstructions']])
  paths.append(_save(
      run, image_grid(pairs, 2, n),
      'top: test images; bottom: reconstructions E[x|z], z ~ q(z|x)',
      'reconstructions.png'))
  draws = drawn['draws']
  table = np.stack([x, drawn['masked'], drawn['mean']] +
                   [draws[:, j] for j in range(draws.shape[1])], 1)
  labels = ['original', 'observed top', 'weighted mean'] + [
      f'draw {j + 1}' for j in range(draws.shape[1])]
  paths.append(_save(
      run, image_grid(table.reshape(-1, table.shape[-1]), n, table.shape[1]),
      'inpainting the bottom half by importance sampling (K=1000; ESS '
      f'median {np.median(drawn["ess"]):.0f})', 'inpainting.png', labels))
  return paths
