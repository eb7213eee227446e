"""Per-epoch metrics of a training run: metrics.csv and TensorBoard scalars.

`MetricsLog(folder, columns, start_step)` keeps the rows of an earlier run
up to `start_step` (a resumed run continues its own curve), then appends one
row per `write`. metrics.csv is rewritten whole through a temporary file and
an atomic rename, so a killed run never leaves a torn line; TensorBoard
events (tensorboardX) go to `<folder>/tensorboard`, purged beyond
`start_step` on resume.
"""

import csv
import io
import os
from typing import Any, Mapping, Sequence

import tensorboardX

from experiments.common import outputs

METRICS_CSV = 'metrics.csv'
TENSORBOARD_DIR = 'tensorboard'


class MetricsError(ValueError):
  """A metrics CSV that is not one this code wrote (one line)."""


def read_rows(path: str, columns: Sequence[str] = ()) -> list[dict[str, str]]:
  """The rows of a metrics CSV (none if it does not exist).

  With `columns`, the file must have them all, a whole number 'step' in
  each row and numbers (or nothing) in the other columns.

  Raises:
    MetricsError: the file cannot be read or is not such a CSV (one line,
      naming the file and the fix).
  """
  if not os.path.exists(path):
    return []
  fix = ('delete it (its rows are lost; the run resumes from its '
         'checkpoint) or restore it')
  try:
    with open(path, newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      rows = list(reader)
      header = reader.fieldnames or []
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise MetricsError(f'cannot read {path} ({str(e).splitlines()[0]}); '
                       f'{fix}.') from None
  missing = [c for c in columns if c not in header]
  if missing:
    raise MetricsError(f'{path} is not a metrics log (no column '
                       f'{", ".join(missing[:3])}); {fix}.')
  for i, row in enumerate(rows if columns else []):
    if not (row.get('step') or '').isdigit() or not all(
        _is_number(row.get(c)) for c in columns if c != 'step'):
      raise MetricsError(f'{path} is not a metrics log (row {i + 2} is '
                         f'not numbers); {fix}.')
  return rows


def _is_number(text: str | None) -> bool:
  if not text:
    return True  # Empty: a value not measured that epoch.
  try:
    float(text)
  except ValueError:
    return False
  return True


class MetricsLog:
  """metrics.csv and TensorBoard scalars of one run folder (see module)."""

  def __init__(self, directory: str, columns: Sequence[str],
               start_step: int = 0, tensorboard: bool = True):
    self.path = os.path.join(directory, METRICS_CSV)
    self.columns = tuple(columns)
    self.rows = [r for r in read_rows(self.path)
                 if r.get('step', '').isdigit() and
                 0 < int(r['step']) <= start_step]
    self._flush()
    self.writer = None
    if tensorboard:
      self.writer = tensorboardX.SummaryWriter(
          os.path.join(directory, TENSORBOARD_DIR),
          purge_step=start_step or None)

  def _flush(self) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, self.columns, lineterminator='\n',
                            extrasaction='ignore')
    writer.writeheader()
    writer.writerows(self.rows)
    outputs.write_text(self.path, text.getvalue())

  def write(self, row: Mapping[str, Any]) -> None:
    """Appends `row` (missing values empty) and its numbers as scalars."""
    self.rows.append({k: '' if row.get(k) is None else row[k]
                      for k in self.columns})
    self._flush()
    if self.writer is not None:
      for key in self.columns:
        if key not in ('step', 'epoch') and isinstance(row.get(key),
                                                       (int, float)):
          self.writer.add_scalar(key, row[key], row['step'])
      self.writer.flush()

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    if self.writer is not None:
      self.writer.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def progress_line(row: Mapping[str, Any], epochs: int) -> str:
  """One line per epoch: bounds, β, learning rate, speed, time."""
  test = row.get('test_bound')
  return (f'epoch {row["epoch"]}/{epochs}  step {row["step"]}  train_bound '
          f'{row["train_bound"]:.2f}' +
          ('' if test is None else f'  test_bound {test:.2f}') +
          f'  beta {row["beta"]:.3g}  lr {row["learning_rate"]:.3g}  '
          f'{row["examples_per_s"]:,.0f} ex/s  ({row["epoch_wall_s"]:.1f} s, '
          f'cpu {row["epoch_cpu_s"]:.1f} s)')


def summary_line(rows: Sequence[Mapping[str, Any]], compile_s: float) -> str:
  """Epochs, wall and CPU time, compile time and examples/s of `rows`."""
  wall = sum(r['epoch_wall_s'] for r in rows)
  cpu = sum(r['epoch_cpu_s'] for r in rows)
  examples = sum(r['examples_per_s'] * r['epoch_wall_s'] for r in rows)
  return (f'trained {len(rows)} epochs in {wall:.1f} s wall, {cpu:.1f} s CPU '
          f'(+{compile_s:.1f} s compiling): {examples / max(wall, 1e-9):,.0f}'
          ' ex/s')


LEARNING_CURVE = 'learning_curve.png'


def learning_curve(run: outputs.Run, rows: Sequence[Mapping[str, Any]],
                   title: str) -> str | None:
  """learning_curve.png: the train (and test) bound per epoch of `rows`
  (metrics.csv's, resumed epochs included); None when there are none."""
  def series(key):
    points = [(float(r['epoch']), float(r[key])) for r in rows
              if r.get(key) not in (None, '')]
    return [p[0] for p in points], [p[1] for p in points]

  epochs, train_bound = series('train_bound')
  if not epochs:
    return None
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(epochs, train_bound, marker='.' if len(epochs) == 1 else None,
          label='train bound (mean over the epoch)')  # One epoch: a dot.
  test_epochs, test_bound = series('test_bound')
  if test_epochs:
    ax.plot(test_epochs, test_bound, 'o-', label='test bound')
  ax.set_xlabel('epoch')
  ax.set_ylabel('bound (nats per example)')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  return run.save_figure(fig, LEARNING_CURVE)


def write_hparams(directory: str, hparams: Mapping[str, Any],
                  results: Mapping[str, Any]) -> None:
  """The run's settings and final numbers in TensorBoard's HPARAMS tab
  (`<folder>/tensorboard/hparams`); values that are neither numbers, text
  nor true/false are written as text, missing ones left out."""
  plain = lambda v: v if isinstance(v, (bool, int, float, str)) else str(v)
  numbers = {k: float(v) for k, v in results.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and v == v}
  with tensorboardX.SummaryWriter(os.path.join(directory,
                                               TENSORBOARD_DIR)) as writer:
    writer.add_hparams({k: plain(v) for k, v in hparams.items()
                        if v is not None}, numbers, name='hparams')
