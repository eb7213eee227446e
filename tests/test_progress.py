"""Progress with rate and ETA (experiments/common/progress.py)."""

import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.common import progress
from vae import data as data_lib
from vae import distributions as dists
from vae import evaluate as eval_lib
from vae import importance


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_plain_lines_without_a_terminal():
  stream = io.StringIO()
  with progress.Progress(10, 'work', 'images', stream=stream,
                         interval=0.0) as bar:
    for i in range(1, 11):
      bar.set(i)
  lines = stream.getvalue().splitlines()
  assert len(lines) == 10 and '\r' not in stream.getvalue()
  assert lines[-1].startswith('work: 10/10 images (100%), ')
  assert 'elapsed, ETA 00:00' in lines[-1]


def test_plain_lines_are_one_per_interval_and_the_last():
  stream = io.StringIO()
  with progress.Progress(100, 'work', 'images', stream=stream,
                         interval=3600.0) as bar:
    for i in range(1, 101):
      bar.set(i)
  assert stream.getvalue().count('\n') == 1  # Only the end.
  quiet = io.StringIO()
  with progress.Progress(3, 'sweep', 'points', stream=quiet,
                         plain=False) as bar:
    bar.update(3)
  assert quiet.getvalue() == ''


def test_a_bar_on_a_terminal_with_rate_and_eta():
  stream = Terminal()
  with progress.Progress(4, 'training', 'epochs', initial=1,
                         stream=stream) as bar:
    progress.write('epoch 2 line', stream=stream)
    bar.set(2)
    bar.set(4)
  text = stream.getvalue()
  assert '\r' in text and 'training' in text and '4/4' in text
  assert 'epoch 2 line' in text
  assert bar.rate() is not None and bar.eta() == 0


class Line:  # A tiny model with a closed form (tests/test_model.py's).
  latent_dim = 1
  data_dim = 1

  def init(self, key, data_mean=None):
    return {'c': jnp.full(1, 0.1), 'w': jnp.ones(1)}

  def prior(self, params):
    return dists.standard_normal((1,))

  def encoder(self, params, x):
    return dists.Normal(params['c'] * x, jnp.zeros_like(x))

  def decoder(self, params, z):
    return dists.Normal(params['w'] * z, jnp.zeros_like(z))


def test_evaluate_announces_its_work_and_time_then_shows_progress(
    capsys, monkeypatch):
  monkeypatch.setattr(progress, 'PILOT_FROM', 1)
  monkeypatch.setattr(progress, 'INTERVAL_S', 0.0)
  x = np.random.RandomState(0).randn(40, 1).astype(np.float32)
  dataset = data_lib.Dataset('toy', x, x[:10], x, 'none')
  config = eval_lib.EvalConfig(eval_k=200, eval_batch_size=10,
                               eval_chunk_size=100, eval_iwae_ks=(1,),
                               pictures=False)
  lines = []
  ev = progress.evaluate(Line(), Line().init(None), dataset, config,
                         log=lines.append)
  assert lines[0].startswith('evaluation: 40 test images x K=200 samples '
                             '= 8,000 decoded samples; roughly ')
  out = capsys.readouterr().out
  assert 'importance sampling: 40/40 images (100%)' in out
  assert '\r' not in out
  assert np.isfinite(ev.summary['test_nll'])
  seconds = progress.pilot_seconds(Line(), Line().init(None), x, config,
                                   jax.random.PRNGKey(0))
  assert 0 < seconds < 60


def test_importance_sampling_reports_each_batch():
  x = np.zeros((25, 1), np.float32)
  calls = []
  importance.importance_sampling(Line(), Line().init(None), x,
                                 jax.random.PRNGKey(0), 10, batch_size=10,
                                 chunk_size=10,
                                 progress=lambda d, n: calls.append((d, n)))
  assert calls == [(10, 25), (20, 25), (25, 25)]


def test_evaluate_resumes_its_importance_sampling(tmp_path, monkeypatch):
  """Interrupted after 2 of 4 batches, a rerun computes batches 2 and 3 only
  and gives the uninterrupted numbers exactly; the file is removed at the
  end, and one from other parameters is not used."""
  x = np.random.RandomState(0).randn(40, 1).astype(np.float32)
  dataset = data_lib.Dataset('toy', x, x[:10], x, 'none')
  config = eval_lib.EvalConfig(eval_k=200, eval_batch_size=10,
                               eval_chunk_size=100, eval_iwae_ks=(1,),
                               pictures=False)
  model, params = Line(), Line().init(None)
  full = progress.evaluate(model, params, dataset, config, log=print)
  path = str(tmp_path / 'partial.npz')
  monkeypatch.setattr(progress, 'SAVE_EVERY_S', 1e9)  # Saved on interrupt.
  original = progress.Partial.__call__
  computed = []

  def interrupted(self, i, out):
    computed.append(i)
    original(self, i, out)
    if i == 1:
      raise KeyboardInterrupt

  monkeypatch.setattr(progress.Partial, '__call__', interrupted)
  with pytest.raises(KeyboardInterrupt):
    progress.evaluate(model, params, dataset, config, log=print,
                      partial=path)
  assert computed == [0, 1] and os.path.exists(path)
  monkeypatch.setattr(progress.Partial, '__call__',
                      lambda self, i, out: (computed.append(i),
                                            original(self, i, out)))
  lines = []
  again = progress.evaluate(model, params, dataset, config,
                            log=lines.append, partial=path)
  assert computed == [0, 1, 2, 3]
  assert 'resuming the importance sampling: 2 batches done' in lines[0]
  assert again.summary == full.summary
  assert not os.path.exists(path)
  # A kept file from other parameters is not resumed.
  with pytest.raises(KeyboardInterrupt):
    monkeypatch.setattr(progress.Partial, '__call__', interrupted)
    progress.evaluate(model, params, dataset, config, log=print,
                      partial=path)
  monkeypatch.setattr(progress.Partial, '__call__', original)
  lines = []
  other = progress.evaluate(model, {**params, 'w': params['w'] + 1.0},
                            dataset, config, log=lines.append, partial=path)
  assert 'from other settings, parameters or images' in lines[0]
  assert other.summary['test_nll'] != full.summary['test_nll']
