"""Compare trained runs: groups over seeds, and paired differences per image.

A run is its settings, its seed, its summary numbers (test NLL, ELBO, ...)
and, where kept, its per-image values on the evaluation images. Runs whose
settings are equal form a group (the seeds of one model); per group and
summary number x: the mean and sd over the S seeds (`stats.seed_spread`) and
the mean over seeds of the SE over images.

Against a baseline group, for each seed s run in both groups and each
per-image value v (−log p̂ for the NLL, the ELBO):

    Δ_s = (1/N) Σ_n (v_n^group,s − v_n^baseline,s),
    SE_s = sd_n(v^group,s − v^baseline,s) / √N          (paired, same images)

(`stats.paired_difference`); over seeds: Δ̄ = (1/S) Σ_s Δ_s with its SE over
images √(Σ_s SE_s²) / S (the images' and importance samples' noise: the
seeds' runs are evaluated independently) and its sd over seeds (the
training noise: a new seed is a new model).
"""

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from vae import stats

# Summary numbers compared over seeds (those a run has).
SUMMARY = ('test_nll', 'test_nll_stderr', 'test_elbo', 'test_iwae_5',
           'test_iwae_50', 'test_kl', 'active_units', 'final_train_bound',
           'train_wall_s', 'train_cpu_s')
# Per-image values compared paired: (name in the rows, per-image key, sign).
PAIRED = (('nll', 'log_px', -1.0), ('elbo', 'elbo', 1.0))


class Run(NamedTuple):
  """One trained run.

  Attributes:
    name: how the run is called in the rows (e.g. its folder).
    settings: what the run was trained with, the seed left out; runs with
      equal settings are seeds of one model.
    seed: its training seed.
    summary: its numbers (`SUMMARY` keys it has).
    per_image: None, or per evaluation image [N] 'log_px' and 'elbo' (the
      same images, in the same order, for every run).
  """
  name: str
  settings: Mapping[str, Any]
  seed: int
  summary: Mapping[str, Any]
  per_image: Mapping[str, np.ndarray] | None = None


def _key(settings: Mapping[str, Any]) -> tuple:
  return tuple(sorted((k, repr(v)) for k, v in settings.items()))


def labels(runs: Sequence[Run]) -> dict[tuple, str]:
  """A label per group: the settings that differ between groups, as
  'key=value, ...' ('all runs' when there is one group)."""
  groups = {_key(r.settings): r.settings for r in runs}
  keys = sorted({k for s in groups.values() for k in s})
  varying = [k for k in keys
             if len({repr(s.get(k)) for s in groups.values()}) > 1]
  return {g: ', '.join(f'{k}={s.get(k)}' for k in varying) or 'all runs'
          for g, s in groups.items()}


def compare(runs: Sequence[Run], baseline: str | None = None
            ) -> tuple[list[dict], list[dict]]:
  """Group rows and per-seed pair rows (module docstring).

  Args:
    runs: the runs; two runs of one group must have different seeds.
    baseline: the label (`labels`) of the group the others are compared
      with; default the group of the first run.

  Returns:
    (groups, pairs): one row per group, in the order of first appearance,
    with 'label', 'runs', 'seeds', '<x>' and '<x>_sd_seeds' per summary
    number x, 'test_nll_se_images' (mean of the runs' SEs), and against the
    baseline 'paired_seeds', '<v>_minus_baseline', '..._se_images' and
    '..._sd_seeds' per paired value v (None for the baseline and where no
    seed pairs); one pair row per (other group, seed in both), with
    '<v>_minus_baseline' (Δ_s) and '<v>_minus_baseline_se' (SE_s).
  """
  if not runs:
    raise ValueError('compare needs at least one run.')
  names = labels(runs)
  order = list(dict.fromkeys(_key(r.settings) for r in runs))
  members = {g: [r for r in runs if _key(r.settings) == g] for g in order}
  for g, rs in members.items():
    seeds = [r.seed for r in rs]
    if len(set(seeds)) != len(seeds):
      raise ValueError(f'the group "{names[g]}" has two runs with one seed '
                       f'({", ".join(r.name for r in rs)}); give each seed '
                       'once.')
  if baseline is None:
    base = order[0]
  else:
    found = [g for g in order if names[g] == baseline]
    if not found:
      raise ValueError(f'baseline: no group is labelled "{baseline}"; the '
                       f'groups are: {"; ".join(names[g] for g in order)}.')
    base = found[0]
  by_seed = {r.seed: (r.name, r.per_image) for r in members[base]
             if r.per_image is not None}
  groups, pairs = [], []
  for g in order:
    rs = members[g]
    row: dict[str, Any] = {'label': names[g], 'baseline': g == base,
                           'runs': ', '.join(r.name for r in rs),
                           'seeds': ', '.join(str(r.seed) for r in rs)}
    for x in SUMMARY:
      values = [r.summary[x] for r in rs if r.summary.get(x) is not None]
      if values:
        mean, sd = stats.seed_spread(values)
        row[x], row[f'{x}_sd_seeds'] = mean, sd
    if 'test_nll_stderr' in row:
      row['test_nll_se_images'] = row.pop('test_nll_stderr')
      row.pop('test_nll_stderr_sd_seeds')
    rows: list[dict[str, Any]] = []
    for r in rs:
      mine = r.per_image
      if g == base or mine is None or r.seed not in by_seed:
        continue
      base_name, theirs = by_seed[r.seed]
      pair: dict[str, Any] = {'label': names[g], 'seed': r.seed,
                              'run': r.name, 'baseline_run': base_name}
      for v, key, sign in PAIRED:
        pair[f'{v}_minus_baseline'], pair[f'{v}_minus_baseline_se'] = (
            stats.paired_difference(sign * np.asarray(mine[key]),
                                    sign * np.asarray(theirs[key])))
      rows.append(pair)
    row['paired_seeds'] = len(rows)
    for v, _, _ in PAIRED:
      deltas = [p[f'{v}_minus_baseline'] for p in rows]
      ses = [p[f'{v}_minus_baseline_se'] for p in rows]
      row[f'{v}_minus_baseline'] = row[f'{v}_minus_baseline_se_images'] = (
          row[f'{v}_minus_baseline_sd_seeds']) = None
      if deltas:
        row[f'{v}_minus_baseline'], row[f'{v}_minus_baseline_sd_seeds'] = (
            stats.seed_spread(deltas))
        row[f'{v}_minus_baseline_se_images'] = float(
            np.sqrt(np.sum(np.square(ses))) / len(ses))
    pairs.extend(rows)
    groups.append(row)
  return groups, pairs
