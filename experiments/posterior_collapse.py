"""Posterior collapse: factorized vs autoregressive decoders of growing capacity, with remedies.

On binary images (default: the fixed binarization of MNIST), one VAE per
decoder x capacity x remedy (`vae.models.flexible_vae`: the MLP encoder and
decoder of `--hidden_sizes`/`--latent_dim`; a factorized Bernoulli decoder,
or an autoregressive one whose MADE has one hidden layer of each width in
`--capacities`, 0 being the masked linear map alone), trained on the ELBO
for `--epochs` with

    none       the plain ELBO;
    warmup     KL warm-up, β = min(1, t / --warmup_steps);
    free_bits  Σ_j max(λ, KL̄_j) in place of the KL (Kingma et al. 2016,
               λ = --free_bits nats per latent dimension);
    delta      the δ-VAE posterior, KL(q_j ‖ p_j) ≥ δ = --committed_rate for
               every x (Razavi et al. 2019).

Each model is then evaluated on the first --num_eval test images: test NLL
by importance sampling (K = --eval_k ≥ 1000; SE over images), the ELBO,
KL(q ‖ p), active units (Cov_x E_q[z_u|x] > 0.01) and I_q(x; z) with the
ELBO-surgery split KL̄ = I_q + KL(q(z) ‖ p(z)) (`vae.analysis.
posterior_collapse`, Monte Carlo SEs), and the paired differences of test NLL
to the same decoder without remedy and to the factorized decoder with the
same remedy (SE of the per-image differences). One row per model in
results.json/.csv; posterior_collapse.png: KL, I_q, active units and test NLL against
decoder capacity, one line per remedy and decoder type. Resumable: each
model trains into models/<name>/checkpoints (resumed from there) and its row
is kept in models/<name>/row.json with its per-image values in
per_image.json (a model with both is not redone); rerun the same command
into the same --output_dir. docs/posterior_collapse.md.

  python launch.py --experiment=posterior_collapse \\
      --tfds_data_dir=/work/shared/data/tensorflow_datasets \\
      --output_dir=runs/posterior_collapse
"""

import json
import os
import time
from typing import Any

import jax
import numpy as np

from experiments.common import outputs
from experiments.common import progress
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import optim
from vae import stats
from vae import train
from vae.analysis import posterior_collapse
from vae.models import flexible_vae
from vae.models import image_vae

REMEDIES = ('none', 'warmup', 'free_bits', 'delta')
MAX_WIDTH = flexible_vae.MAX_WIDTH
TABLE = ('decoder', 'capacity', 'remedy', 'test_nll', 'test_nll_se',
         'nll_vs_none', 'nll_vs_none_se', 'nll_vs_factorized',
         'nll_vs_factorized_se',
         'test_elbo', 'kl', 'mutual_information', 'mutual_information_se',
         'marginal_kl', 'marginal_kl_se', 'active_units')
TIMING = ('train_wall_s', 'train_cpu_s', 'compile_s', 'eval_wall_s',
          'mi_wall_s')
ROW = 'row.json'
PER_IMAGE = 'per_image.json'


@cfg.settings
class Config:
  """Decoders, capacities, remedies; training and evaluation sizes."""
  data: data_lib.DataConfig = data_lib.DataConfig(dataset='binarized_mnist')
  model: image_vae.ModelConfig = image_vae.ModelConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(adam_eps=1e-4)
  decoders: tuple[str, ...] = cfg.setting(
      flexible_vae.DECODERS, 'Decoder types: factorized Bernoulli pixels, '
      'and/or autoregressive (a MADE over pixels conditioned on z, one '
      'model per capacity).', choices=flexible_vae.DECODERS)
  capacities: tuple[int, ...] = cfg.setting(
      (0, 100, 500), 'Hidden width of the autoregressive decoder\'s MADE, '
      'one model each (0: no hidden layer, only the masked linear map from '
      'x_<j to logit j).', min=0, max=MAX_WIDTH)
  remedies: tuple[str, ...] = cfg.setting(
      REMEDIES, 'Remedies, one model each: none, KL warm-up, free bits, '
      'the delta-VAE posterior.', choices=REMEDIES)
  epochs: int = cfg.like(train.TrainConfig, 'epochs', 10)
  batch_size: int = cfg.like(train.TrainConfig, 'batch_size', 100)
  warmup_steps: int = cfg.like(train.TrainConfig, 'warmup_steps', 2000)
  free_bits: float = cfg.like(train.TrainConfig, 'free_bits', 0.25)
  committed_rate: float = cfg.like(flexible_vae.FamilyConfig,
                                   'committed_rate', 0.1)
  eval_k: int = cfg.like(eval_lib.EvalConfig, 'eval_k', 1000, min=1000)
  num_eval: int | None = cfg.like(eval_lib.EvalConfig, 'num_eval', 1000)
  mi_samples: int = cfg.setting(
      10, 'Draws z ~ q(z|x) per test image for I_q(x; z) and its split.',
      min=2, max=10**5)

  def check(self):
    """The batch fits the training set; remedies that need settings > 0."""
    if self.batch_size > self.data.train_size:
      raise ValueError(f'batch_size: {self.batch_size} > the '
                       f'{self.data.train_size} training images.')
    if 'warmup' in self.remedies and not self.warmup_steps:
      raise ValueError('warmup_steps: the warmup remedy needs warmup_steps '
                       '> 0.')
    if 'free_bits' in self.remedies and not self.free_bits:
      raise ValueError('free_bits: the free_bits remedy needs free_bits > 0.')


def grid(config: Config) -> list[tuple[str, int | None, str]]:
  """(decoder, capacity, remedy) of every model: capacity None for the
  factorized decoder, each of `capacities` for the autoregressive one."""
  points: list[tuple[str, int | None, str]] = []
  for decoder in config.decoders:
    caps = config.capacities if decoder == 'autoregressive' else (None,)
    points += [(decoder, c, r) for c in caps for r in config.remedies]
  return points


def name_of(decoder: str, capacity: int | None, remedy: str) -> str:
  """The model's folder name, e.g. 'factorized-none', 'ar100-free_bits'."""
  return (f'factorized-{remedy}' if capacity is None else
          f'ar{capacity}-{remedy}')


def make_model(config: Config, decoder: str, capacity: int | None,
               remedy: str, data_dim: int) -> flexible_vae.FlexibleVAE:
  """The FlexibleVAE of one grid point (posterior 'delta' for the δ-VAE)."""
  m = config.model
  return flexible_vae.FlexibleVAE(
      hidden_sizes=tuple(m.hidden_sizes), latent_dim=m.latent_dim,
      data_dim=data_dim, activation=m.activation,
      posterior_type='delta' if remedy == 'delta' else 'diagonal',
      decoder_type=decoder,
      ar_hidden_sizes=(capacity,) if capacity else (),
      committed_rate=config.committed_rate)


def train_config(config: Config, remedy: str) -> train.TrainConfig:
  """The ELBO with the remedy's warm-up or free bits (none otherwise)."""
  return train.TrainConfig(
      epochs=config.epochs, batch_size=config.batch_size, test_every=0,
      warmup_steps=config.warmup_steps if remedy == 'warmup' else 0,
      free_bits=config.free_bits if remedy == 'free_bits' else 0.0)


def checks(row: dict[str, Any]) -> list[tuple[float, str]]:
  """Exact answers the row's estimates must meet (`stats.CHECKS`): the
  Monte Carlo KL̄ = I_q + KL(q(z) ‖ p) against the closed-form KL of the
  same images (two-sided), and I_q ≤ log N (upper)."""
  floor = 1e-6 * max(1.0, abs(row['kl']))  # Float rounding of the sums.
  return [((row['kl_mc'] - row['kl']) / max(row['kl_mc_se'], floor),
           'two-sided'),
          ((row['mutual_information'] - row['log_n']) /
           max(row['mutual_information_se'], floor), 'upper')]


def run_one(config: Config, dataset: data_lib.Dataset, seed: int,
            out: outputs.Run, point: tuple[str, int | None, str]
            ) -> dict[str, Any]:
  """Trains (or resumes) one model and evaluates it; its row (kept in
  models/<name>/row.json, read back instead of redoing the work)."""
  decoder, capacity, remedy = point
  name = name_of(*point)
  folder = out.path(os.path.join('models', name))
  saved = os.path.join(folder, ROW)
  if all(os.path.exists(os.path.join(folder, f)) for f in (ROW, PER_IMAGE)):
    with open(saved) as f:
      out.log(f'{name}: done before ({saved})')
      return json.load(f)
  before: dict[str, Any] = {}
  if os.path.exists(saved):  # Written before per_image.json: re-evaluated.
    with open(saved) as f:
      before = json.load(f)
  os.makedirs(folder, exist_ok=True)
  model = make_model(config, decoder, capacity, remedy,
                     dataset.train.shape[1])
  t = train_config(config, remedy)

  def on_epoch(row):
    out.log(f'{name}: epoch {row["epoch"]}/{t.epochs}, training bound '
            f'{row["train_bound"]:.3f} (beta {row["beta"]:.3g}), '
            f'{row["epoch_wall_s"]:.1f} s')

  try:
    result = train.train(model, dataset, config.optimizer, t, seed,
                         os.path.join(folder, 'checkpoints'),
                         on_epoch=on_epoch, log=out.log)
  except train.Diverged as e:
    raise SystemExit(f'posterior_collapse: {name}: {e}') from None
  params = result.state.params
  out.log(f'{name}: evaluation')
  ev = progress.evaluate(  # Resumable, as train_vae's.
      model, params, dataset, eval_lib.EvalConfig(
          eval_k=config.eval_k, num_eval=config.num_eval, pictures=False),
      seed, log=out.log, partial=os.path.join(folder, progress.PARTIAL))
  per_image, latents = ev.per_image, ev.latents
  images = eval_lib.test_images(dataset)[:config.num_eval]
  n = len(images)
  outputs.write_json(os.path.join(folder, PER_IMAGE), per_image)
  wall = time.time()
  mi = posterior_collapse.mutual_information(
      model, params, images, jax.random.fold_in(jax.random.PRNGKey(seed), 7),
      config.mi_samples)
  mi_wall = time.time() - wall
  log_px, elbo, kl = (per_image[k] for k in ('log_px', 'elbo', 'kl'))
  row: dict[str, Any] = dict(
      name=name, decoder=decoder,
      capacity='-' if capacity is None else capacity, remedy=remedy,
      epochs=config.epochs, steps=int(result.state.step),
      test_nll=float(-log_px.mean()),
      test_nll_se=float(log_px.std() / np.sqrt(n)),
      test_elbo=float(elbo.mean()), kl=float(kl.mean()),
      reconstruction=float((elbo + kl).mean()),
      active_units=int(latents['active_units']), **mi,
      eval_k=config.eval_k, num_eval=n,
      kl_per_dim=[float(v) for v in np.asarray(latents['kl_per_dim'])],
      train_wall_s=result.wall_s, train_cpu_s=result.cpu_s,
      compile_s=result.compile_s, eval_wall_s=ev.timing['eval_wall_s'],
      mi_wall_s=mi_wall)
  if not result.history and before:  # Trained before: its training times.
    row.update({k: before[k] for k in ('train_wall_s', 'train_cpu_s',
                                       'compile_s') if k in before})
  outputs.write_json(saved, row)
  out.log(f'{name}: test NLL {row["test_nll"]:.2f} ± {row["test_nll_se"]:.2f}'
          f', ELBO {row["test_elbo"]:.2f}, KL {row["kl"]:.2f}, I_q '
          f'{row["mutual_information"]:.2f} ± '
          f'{row["mutual_information_se"]:.2f}, active units '
          f'{row["active_units"]}')
  return row


def paired(out: outputs.Run, rows: list[dict]) -> None:
  """Adds to each row its test NLL minus that of the same decoder with no
  remedy ('nll_vs_none') and of the factorized decoder with the same
  remedy ('nll_vs_factorized'), each the mean over the same images of the
  per-image differences, with SE = sd of the differences / √N (paired:
  the spread over images that both rows share cancels). None where the
  other row is not in the run."""
  nll = {}
  for r in rows:
    with open(out.path(os.path.join('models', r['name'], PER_IMAGE))) as f:
      nll[r['name']] = -np.asarray(json.load(f)['log_px'], np.float64)
  for r in rows:
    cap = None if r['decoder'] == 'factorized' else int(r['capacity'])
    for field, other in (
        ('nll_vs_none', name_of(r['decoder'], cap, 'none')),
        ('nll_vs_factorized', name_of('factorized', None, r['remedy']))):
      d = nll[r['name']] - nll[other] if other in nll else None
      r[field] = None if d is None else float(d.mean())
      r[f'{field}_se'] = None if d is None else float(
          d.std(ddof=1) / np.sqrt(len(d)))


def plot(out: outputs.Run, rows: list[dict], capacities: tuple[int, ...]
         ) -> None:
  """KL̄ and I_q, active units, test NLL against decoder capacity: one
  line per remedy over the autoregressive capacities, the factorized
  decoder a square marker at the left (capacity 'fact.')."""
  plt = outputs.pyplot()
  ticks = ['fact.'] + [f'AR {c}' for c in capacities]
  where = lambda r: (0 if r['decoder'] == 'factorized' else
                     1 + capacities.index(int(r['capacity'])))
  panels = (('kl', 'KL(q‖p) (solid), I_q(x; z) (dotted), nats'),
            ('active_units', 'active units'), ('test_nll', 'test NLL (nats)'))
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout='constrained')
  remedies = list(dict.fromkeys(r['remedy'] for r in rows))
  for ax, (field, label) in zip(axes, panels):
    for i, remedy in enumerate(remedies):
      color = f'C{i}'
      for decoder, marker in (('factorized', 's'), ('autoregressive', 'o')):
        sel = sorted((r for r in rows if r['remedy'] == remedy and
                      r['decoder'] == decoder), key=where)
        if not sel:
          continue
        xs = [where(r) for r in sel]
        ax.plot(xs, [r[field] for r in sel], marker=marker, color=color,
                label=f'{remedy}, {decoder}')
        if field == 'kl':
          ax.errorbar(xs, [r['mutual_information'] for r in sel],
                      [2 * r['mutual_information_se'] for r in sel],
                      color=color, ls=':', marker=marker, mfc='none')
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set(xlabel='decoder (AR: MADE hidden width)', ylabel=label)
  axes[1].legend(fontsize=7)
  axes[0].set_title('KL and I_q (±2 SE) vs decoder capacity')
  axes[1].set_title('active units (Cov_x E[z_u|x] > 0.01)')
  axes[2].set_title(f'test NLL, IS K={rows[0]["eval_k"]}')
  out.save_figure(fig, 'posterior_collapse.png')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Trains and evaluates every grid point (resuming), then the table and
  the figure; one record per model."""
  dataset = data_lib.load(config.data, seed)
  points = grid(config)
  steps = len(dataset.train) // config.batch_size * config.epochs
  out.log(f'posterior_collapse: {config.data.dataset} '
          f'({len(dataset.train)} train, {dataset.binarization} '
          f'binarization), {len(points)} models x {config.epochs} epochs '
          f'({steps} steps each), then IS with K={config.eval_k} on '
          f'{config.num_eval or len(dataset.test)} test images; output in '
          f'{out.dir}')
  rows = []
  with progress.Progress(len(points), 'posterior_collapse', 'models') as bar:
    for point in points:
      rows.append(run_one(config, dataset, seed, out, point))
      bar.update()
  paired(out, rows)
  plot(out, rows, tuple(config.capacities))
  out.write_json('timing.json', {r['name']: {k: r[k] for k in TIMING}
                                 for r in rows})
  out.write_json('kl_per_dim.json', {r['name']: r['kl_per_dim']
                                     for r in rows})
  records = [{**{k: v for k, v in r.items()
                 if k not in TIMING and k != 'kl_per_dim'},
              stats.CHECKS: checks(r)} for r in rows]
  out.table(records, TABLE)
  return records
