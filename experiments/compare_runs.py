"""Compare finished train_vae runs: means over seeds, paired differences.

Reads each run folder of --runs (comma-separated; shell-style patterns such
as runs/flex/*_s1 are expanded): its results.json (the final evaluation),
metrics.csv (the training time: the epochs' sums, over resumes) and, where
present, per_image.json (written by train_vae and evaluate_vae since
per-image values were kept; an evaluate_vae output folder counts as its
checkpoint's run). Runs whose settings differ only in
the seed are one group. Per group: the mean and sd over seeds of test NLL,
ELBO, IWAE_5/50, KL, active units, the last epoch's train bound and the
training time, and the mean SE over images. Against --baseline (a group's
label, default the first run's group), per seed run in both groups, the
paired difference of test NLL and of ELBO on the same images,

    Δ_s = (1/N) Σ_n (nll_n^group,s − nll_n^baseline,s),  SE_s = sd_n / √N,

and over seeds their mean with its SE over images and sd over seeds
(`vae.analysis.run_comparison`). Writes results.json/.csv (the groups),
pairs.json/.csv (one row per group and seed) and table.md (the groups as
a Markdown table, ± the sd over seeds). A per_image.json whose mean does
not give its results.json's test NLL is refused (one line): it is from
another evaluation.

  python launch.py --experiment=compare_runs \\
      --runs='runs/flex/standard_s*,runs/flex/full_s*' --baseline='posterior=diagonal'
"""

import glob
import json
import os

import numpy as np

from experiments import train_vae
from experiments.common import metrics
from experiments.common import outputs
from vae import config as cfg
from vae.analysis import run_comparison
from vae.models import flexible_vae

PER_IMAGE = train_vae.PER_IMAGE  # What train_vae and evaluate_vae write.
# What results.json rows hold beside the settings: not settings.
NOT_SETTINGS = ('seed', 'steps', 'split', 'eval_k', 'num_eval', 'k_eval',
                'active_units', 'disagrees')
NOT_SETTINGS_PREFIXES = ('test_', 'final_', 'ais_', 'is_')
COLUMNS = ('label', 'seeds', 'test_nll', 'test_nll_sd_seeds',
           'test_nll_se_images', 'test_elbo', 'test_kl', 'active_units',
           'nll_minus_baseline', 'nll_minus_baseline_se_images',
           'nll_minus_baseline_sd_seeds', 'train_wall_s')
PAIR_COLUMNS = ('label', 'seed', 'run', 'baseline_run', 'nll_minus_baseline',
                'nll_minus_baseline_se', 'elbo_minus_baseline',
                'elbo_minus_baseline_se')


@cfg.settings
class Config:
  """The run folders to compare and the group they are compared with."""
  runs: str | None = cfg.setting(
      None, 'Run folders of train_vae (or evaluate_vae) runs, comma-'
      'separated; shell patterns (runs/flex/*_s1) are expanded.', text=True,
      required=True)
  baseline: str | None = cfg.setting(
      None, 'Label of the group the others are paired with, e.g. '
      '"posterior=diagonal" (default: the group of the first run).',
      text=True)

  def check(self):
    """Every pattern of `runs` names at least one run folder."""
    if self.runs is not None:
      folders(self.runs)


def folders(runs: str) -> list[str]:
  """The folders `runs` names, in order, each once; one line if a pattern
  matches no folder with a results.json."""
  found: list[str] = []
  for pattern in (p.strip() for p in runs.split(',') if p.strip()):
    pattern = os.path.expanduser(pattern)
    matched = sorted(d for d in glob.glob(pattern)
                     if os.path.exists(os.path.join(d, 'results.json')))
    if not matched:
      raise ValueError(f'runs: "{pattern}" names no finished run folder (one '
                       'with a results.json); train or evaluate it first.')
    found.extend(d for d in matched if d not in found)
  return found


def read_run(folder: str) -> run_comparison.Run:
  """A run folder as a `run_comparison.Run` (settings: its results.json
  row less the numbers, the model families filled in with their defaults)."""
  row = outputs.read_json(os.path.join(folder, 'results.json'))[0]
  defaults = flexible_vae.FamilyConfig()
  settings = {'posterior': defaults.posterior, 'prior': defaults.prior,
              'decoder': defaults.decoder}
  settings.update({k: v for k, v in row.items() if k not in NOT_SETTINGS and
                   not k.startswith(NOT_SETTINGS_PREFIXES)})
  summary = dict(row)
  summary.update(training_time(_trained_folder(folder)))
  per_image = None
  if os.path.exists(os.path.join(folder, PER_IMAGE)):
    with open(os.path.join(folder, PER_IMAGE)) as f:
      per_image = {k: np.asarray(v, np.float64) for k, v in json.load(f)
                   .items()}
    nll = -per_image['log_px'].mean()
    if not np.isclose(nll, row['test_nll'], rtol=1e-6, atol=1e-6):
      raise ValueError(f'{folder}: {PER_IMAGE} gives test NLL {nll:.4f} but '
                       f'results.json {row["test_nll"]:.4f}; they are from '
                       'different evaluations: evaluate the run again.')
  return run_comparison.Run(folder, settings, int(row['seed']), summary,
                            per_image)


def training_time(folder: str) -> dict[str, float]:
  """train_wall_s and train_cpu_s: the sums of epoch_wall_s and
  epoch_cpu_s over the epochs of the run's metrics.csv (the whole run, over
  resumes; the held-out evaluations every --test_every epochs excluded);
  empty without metrics.csv."""
  rows = metrics.read_rows(os.path.join(folder, metrics.METRICS_CSV))
  if not rows:
    return {}
  epochs = {row['epoch']: row for row in rows}
  return {f'train_{k}_s': sum(float(r[f'epoch_{k}_s']) for r in
                              epochs.values()) for k in ('wall', 'cpu')}


def _trained_folder(folder: str) -> str:
  """The train_vae run behind an evaluate_vae output folder (else itself)."""
  config = outputs.read_config(folder) or {}
  if config.get('experiment') == 'evaluate_vae':
    return config['settings'].get('checkpoint_dir') or folder
  return folder


def table_md(groups: list[dict]) -> str:
  """The groups as a Markdown table: value ± sd over seeds."""
  def pm(row, key, digits=2):
    if row.get(key) is None:
      return '—'
    sd = row.get(f'{key}_sd_seeds')
    text = f'{row[key]:.{digits}f}'
    return text if sd is None or not np.isfinite(sd) else (
        f'{text} ± {sd:.{digits}f}')
  lines = ['| group | seeds | test NLL (± sd over seeds) | SE over images | '
           'test ELBO | KL | active units | NLL − baseline (paired) | '
           'train wall s |', '|' + '---|' * 9]
  for r in groups:
    paired = '—'
    if r.get('nll_minus_baseline') is not None and not r['baseline']:
      paired = (f'{r["nll_minus_baseline"]:+.2f} ± '
                f'{r["nll_minus_baseline_se_images"]:.2f} (images)')
      if np.isfinite(r['nll_minus_baseline_sd_seeds']):
        paired += f', sd {r["nll_minus_baseline_sd_seeds"]:.2f} (seeds)'
    lines.append(
        f'| {r["label"]}{" (baseline)" if r["baseline"] else ""} | '
        f'{r["seeds"]} | {pm(r, "test_nll")} | '
        f'{r.get("test_nll_se_images", float("nan")):.2f} | '
        f'{pm(r, "test_elbo")} | {pm(r, "test_kl", 1)} | '
        f'{pm(r, "active_units", 1)} | {paired} | '
        f'{pm(r, "train_wall_s", 0)} |')
  return '\n'.join(lines) + '\n'


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Reads the runs, compares them; one record per group."""
  del seed  # Nothing is drawn.
  if config.runs is None:  # Required: the launcher refuses None.
    raise ValueError('runs: a value is required.')
  try:  # A stale per_image.json, or a baseline no group has: one line.
    runs = [read_run(f) for f in folders(config.runs)]
    groups, pairs = run_comparison.compare(runs, config.baseline)
  except ValueError as e:
    raise SystemExit(f'compare_runs: {e}') from None
  missing = [r.name for r in runs if r.per_image is None]
  if missing:
    out.log(f'no {PER_IMAGE} (no paired differences) in: '
            f'{", ".join(missing)}; evaluate_vae --checkpoint_dir=RUN writes '
            'one, then pass its output folder instead.')
  outputs.write_results(out.dir, pairs, 'pairs')
  outputs.write_text(out.path('table.md'), table_md(groups))
  out.table(groups, COLUMNS)
  if pairs:
    out.table(pairs, PAIR_COLUMNS)
  return groups
