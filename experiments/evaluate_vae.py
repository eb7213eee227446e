"""Evaluate a train_vae checkpoint: test NLL (IS), ELBO, IWAE_k, pictures.

Loads the newest intact (or --step) checkpoint of a `train_vae` run folder
(--checkpoint_dir; its config.json gives the model and data) and estimates,
on the test images,

    test_nll = -(1/N) Σ_n log (1/K) Σ_k p(x_n|z_k) p(z_k) / q(z_k|x_n),

with K = --eval_k samples z_k ~ q(z|x_n) (chunked, jitted logsumexp), the
ELBO and IWAE_k from the same samples, the number of active units
(Cov_x(E_q[z_u|x]) > 1e-2), the KL per latent dimension (latents.json),
and PNGs of prior samples, reconstructions and inpainting. Writes
results.json/.csv, config.json, timing.json and per_image.json (log p̂(x_n),
its SE, ELBO and KL of every image: what `compare_runs` pairs). An
interrupted importance sampling keeps its finished batches in
importance_partial.npz; a rerun into the same folder resumes them, with the
same numbers as an uninterrupted run (`progress.Partial`).

With --ais_images=n (default 0: off) the record also holds AIS beside IS on
the first n of those images (`vae.evaluate.ais_summary`: ais_log_px,
is_log_px of the same images, ais_minus_is, each with its SE over images
and its Monte Carlo SE; --ais_temperatures, --ais_chains, ...); with
--bdmc_images=m, one 'bdmc' row per --bdmc_temperatures: the BDMC bracket
on m images simulated from the model (`vae.evaluate.bdmc_records`, checked:
gap ≥ 0). The per-image AIS and IS values are in ais_per_image.json.

  python launch.py --experiment=evaluate_vae --checkpoint_dir=runs/vae_mnist \\
      --tfds_data_dir=DATA_DIR
"""

import dataclasses
import os

import jax
import numpy as np

from experiments import train_vae
from experiments.common import outputs
from experiments.common import progress
from vae import checkpoint
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import stats


@cfg.settings
class Config:
  """The run to evaluate, where its data is, and the evaluation."""
  checkpoint_dir: str | None = cfg.setting(
      None, 'Run folder of a train_vae run (holding checkpoints/).',
      text=True, required=True)
  step: int | None = cfg.setting(
      None, 'Checkpoint step to evaluate (default: the newest intact one).',
      min=0)
  split: str = cfg.setting('test', 'Images to evaluate on.',
                           choices=('test', 'validation'))
  paths: data_lib.DataPaths = data_lib.DataPaths()
  evaluation: eval_lib.EvalConfig = eval_lib.EvalConfig()

  def check(self):
    """checkpoint_dir, if given, is a train_vae run folder with a checkpoint
    (of `step`, if given)."""
    if self.checkpoint_dir is not None:
      run_dir = os.path.expanduser(self.checkpoint_dir)
      _train_config(run_dir)
      steps = checkpoint.list_steps(os.path.join(run_dir,
                                                 train_vae.CHECKPOINTS))
      if not steps:
        raise ValueError(f'checkpoint_dir: {run_dir} holds no checkpoint (no '
                         f'{train_vae.CHECKPOINTS}/step_N); train it first or '
                         'choose another run folder.')
      if self.step is not None and self.step not in steps:
        raise ValueError(f'step: {run_dir} has no checkpoint of step '
                         f'{self.step}; it has steps '
                         f'{", ".join(map(str, steps[-10:]))}.')


def _train_config(run_dir: str) -> dict:
  """The config.json of a train_vae run folder; ValueError (one line) if
  `run_dir` is none or its config.json cannot be read."""
  folder = outputs.inspect(run_dir) if os.path.isdir(run_dir) else None
  if folder is None or folder.kind != 'run' or (
      folder.experiment != 'train_vae'):
    why = f'; {folder.problem}' if folder and folder.problem else ''
    raise ValueError(f'checkpoint_dir: {run_dir} is not a train_vae run '
                     f'folder (no run.json and config.json of train_vae{why}).')
  if folder.problem or folder.config is None or not isinstance(
      folder.config.get('settings'), dict) or not isinstance(
          folder.config.get('seed'), int):
    why = folder.problem or (f'{run_dir} has no config.json with its '
                             'settings and seed')
    raise ValueError(f'checkpoint_dir: {why}; it cannot be evaluated.')
  return folder.config


def load_run(run_dir: str, step: int | None, log=print):
  """(train_vae Config, its seed, model, params, step) of a run folder.

  Raises:
    SystemExit: one line, when `run_dir` is no train_vae run folder or has
      no intact checkpoint.
  """
  try:
    saved = _train_config(run_dir)
    trained = cfg.from_dict(train_vae.Config, saved['settings'])
  except (ValueError, TypeError, KeyError) as e:
    raise SystemExit(f'evaluate_vae: {str(e).splitlines()[0]}') from None
  model = train_vae.make_model(trained)  # Its families too.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  target = {'params': jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                   shapes)}
  directory = os.path.join(run_dir, train_vae.CHECKPOINTS)
  try:
    if step is None:
      tree, step = checkpoint.restore_latest(directory, target, log,
                                             move_aside=False)
      if tree is None:
        raise FileNotFoundError(f'no checkpoint in {directory}.')
    else:
      tree = checkpoint.restore(directory, step, target)
  except (FileNotFoundError, ValueError, checkpoint.CheckpointError) as e:
    raise SystemExit(f'evaluate_vae: {e}') from None
  return trained, saved['seed'], model, tree['params'], step


def load(config: Config, log):
  """(run folder, its train_vae config, seed, model, params, step, dataset):
  the checkpoint and the run's data, read from `config`'s data paths where
  given, else from the run's."""
  if config.checkpoint_dir is None:  # Required: the launcher refuses None.
    raise ValueError('checkpoint_dir: a value is required.')
  run_dir = os.path.abspath(os.path.expanduser(config.checkpoint_dir))
  trained, train_seed, model, params, step = load_run(run_dir, config.step,
                                                      log)
  paths = {f.name: getattr(config.paths, f.name) or
           getattr(trained.data.paths, f.name)
           for f in dataclasses.fields(data_lib.DataPaths)}
  dataset = data_lib.load(dataclasses.replace(
      trained.data, paths=data_lib.DataPaths(**paths)), train_seed)
  return run_dir, trained, train_seed, model, params, step, dataset


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Loads the run's model and data, evaluates; one record."""
  run_dir, trained, train_seed, model, params, step, dataset = load(
      config, out.log)
  t = trained.training
  out.log(f'evaluate_vae: {run_dir} step {step} ({trained.data.dataset}, '
          f'{t.objective}/{t.estimator} k={t.num_samples}); output in '
          f'{out.dir}')
  if seed != train_seed:  # The IS key is this run's --seed (the launcher's).
    out.log(f'evaluate_vae: --seed={seed}, the run was trained with seed '
            f'{train_seed}: other samples than train_vae\'s final evaluation '
            f'(--seed={train_seed} repeats it exactly).')
  ev = progress.evaluate(model, params, dataset, config.evaluation, seed,
                         t.num_samples, config.split, out.log,
                         partial=out.path(progress.PARTIAL))
  train_vae.write_evaluation(out, ev)
  out.write_json('timing.json', ev.timing)
  if ev.ais is not None:
    out.write_json('ais_per_image.json', ev.ais)
  records = stats.mark_disagreements(
      [train_vae.record(trained, train_seed, step, ev.summary)] +
      ev.brackets)
  out.table(records[:1], ('dataset', 'objective', 'estimator', 'k', 'steps',
                          'test_nll', 'test_nll_stderr', 'test_elbo',
                          'active_units', 'eval_k'))
  if 'ais_log_px' in ev.summary:
    out.table(records[:1], AIS_COLUMNS)
  if ev.brackets:
    out.table(records[1:], BDMC_COLUMNS)
  return records


AIS_COLUMNS = ('ais_images', 'ais_temperatures', 'ais_chains', 'eval_k',
               'ais_log_px', 'ais_log_px_se_images', 'ais_log_px_se_mc',
               'is_log_px', 'is_log_px_se_images', 'is_log_px_se_mc',
               'ais_minus_is', 'ais_minus_is_se', 'ais_ess', 'ais_acceptance')
BDMC_COLUMNS = ('T', 'images', 'lower', 'lower_se', 'upper', 'upper_se', 'gap',
                'gap_se', 'gap_one', 'gap_one_se', 'acceptance', 'wall_s',
                'disagrees')
