"""What a train_vae run records beside its results (issue 21): progress
with rate and ETA (plain lines: not a terminal), the planned evaluation,
learning_curve.png, the settings and final numbers in TensorBoard's HPARAMS
tab, and the git commit in config.json."""

import json
import subprocess

from experiments import train_vae
from experiments.common import outputs
from experiments.common import runner
from vae import data
from vae import evaluate
from vae import train
from vae.models import image_vae

TINY = train_vae.Config(
    data=data.DataConfig(dataset='synthetic', num_train=200),
    model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2),
    training=train.TrainConfig(batch_size=20, epochs=3),
    evaluation=evaluate.EvalConfig(eval_k=100, eval_chunk_size=50,
                                   num_eval=20, eval_iwae_ks=(1, 5),
                                   pictures=False))


def test_a_run_records_progress_curve_hparams_and_commit(tmp_path, capsys):
  (record,) = runner.run_point('train_vae', TINY, 0, str(tmp_path))
  out, err = capsys.readouterr()
  assert 'evaluation: 20 test images x K=100 samples = 2,000 decoded' in out
  assert 'training: 3/3 epochs (100%)' in out and 'ETA 00:00' in out
  assert 'importance sampling: 20/20 images (100%)' in out
  assert '\r' not in out and not err  # Not a terminal: plain lines.
  assert (tmp_path / 'learning_curve.png').stat().st_size > 1000
  hparams = list((tmp_path / 'tensorboard' / 'hparams').iterdir())
  events = b''.join(p.read_bytes() for p in hparams)
  assert b'test_nll' in events and b'learning_rate' in events
  config = json.loads((tmp_path / 'config.json').read_text())
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, cwd=outputs.__file__.rsplit('/', 1)[0])
  assert config['git_commit'] == head.stdout.strip()
  assert isinstance(config['git_dirty'], bool)
  assert record['epochs'] == 3


def test_the_commit_is_unknown_outside_a_checkout(tmp_path):
  assert outputs.git_commit(str(tmp_path)) == ('unknown', None)
