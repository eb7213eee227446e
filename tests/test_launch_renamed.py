"""Renamed flags: the old name is refused before anything runs, naming the
new one (the launcher's `RENAMED` and an experiment module's)."""

import pytest

from experiments.common import flags as config_flags
from experiments.common import launch
from experiments.common import runner

RENAMED = '--experiment=tests.renamed_experiment'


def _cli(capsys, *args):
  rc = launch.cli(['launch.py', *args])
  out, err = capsys.readouterr()
  return rc, out, err


@pytest.mark.parametrize('args, message', [
    (['--batch=4'], '--batch was renamed --batch_size.'),
    (['--batch', '4'], '--batch was renamed --batch_size.'),
    (['-batch=4'], '--batch was renamed --batch_size.'),
    (['--chatty'], '--chatty was renamed --verbose.'),
    (['--nochatty'], '--nochatty was renamed --noverbose.'),
    (['--sweep=batch=1,2'], '--sweep=batch=1,2: --batch was renamed '
     '--batch_size; give --sweep=batch_size=...'),
    (['--slurm_time=5'], '--slurm_time was renamed --timeout_min.'),
    (['--dry_run', '--slurm_time=5'], '--slurm_time was renamed '
     '--timeout_min.'),
])
def test_an_old_name_is_one_line_exit_2_before_any_work(tmp_path, capsys,
                                                        args, message):
  out = tmp_path / 'run'
  rc, stdout, err = _cli(capsys, RENAMED, f'--output_dir={out}', *args)
  assert rc == 2
  assert err == f'launch.py: {message}\n'
  assert not stdout and not out.exists()


def test_the_launchers_renames_apply_to_every_experiment(tmp_path, capsys):
  rc, _, err = _cli(capsys, '--experiment=tests.fake_experiment',
                    f'--output_dir={tmp_path / "run"}', '--slurm_time=5')
  assert (rc, err) == (2, 'launch.py: --slurm_time was renamed '
                       '--timeout_min.\n')


def test_new_names_and_a_current_flag_starting_with_no_are_accepted(
    tmp_path, capsys):
  # --noise is a current flag though 'ise' is an old name: not refused.
  rc, stdout, err = _cli(capsys, RENAMED, '--dry_run', '--batch_size=4',
                         '--noverbose', '--noise=0.5', '--timeout_min=5',
                         '--sweep=batch_size=1,2')
  assert rc == 0, err
  assert 'batch_size=1' in stdout and 'batch_size=2' in stdout


def test_every_renamed_flag_of_every_experiment():
  """Each experiment's old names are no current flag and name a current one;
  each is refused on the command line with the one line."""
  fv = launch.flags.FlagValues()
  launch._launcher_flags(fv)
  launcher = set(fv)
  declared = [n for n in runner.names()
              if getattr(runner.load(n), 'RENAMED', None)]
  assert declared  # E.g. discrete_latents, intractability.
  for old, new in launch.RENAMED.items():
    assert old not in launcher and new in launcher, (old, new)
  for name in runner.names():
    module = runner.load(name)
    current = launcher | set(config_flags.flag_paths(module.Config))
    for old, new in getattr(module, 'RENAMED', {}).items():
      assert old not in current, (name, old)
      assert new in current, (name, new)
      with pytest.raises(launch.UsageError,
                         match=f'^--{old} was renamed --{new}.$'):
        launch.check_renamed(['launch.py', f'--{old}=1'], module)


@pytest.mark.parametrize('experiment, args, message', [
    ('intractability', ['--max_log2_samples=4'],
     '--max_log2_samples was renamed --max_log2_k.'),
    ('intractability', ['--sweep=max_log2_samples=3,4'],
     '--sweep=max_log2_samples=3,4: --max_log2_samples was renamed '
     '--max_log2_k; give --sweep=max_log2_k=...'),
])
def test_a_real_experiments_old_name(tmp_path, capsys, experiment, args,
                                     message):
  out = tmp_path / 'run'
  rc, _, err = _cli(capsys, f'--experiment={experiment}',
                    f'--output_dir={out}', *args)
  assert (rc, err) == (2, f'launch.py: {message}\n')
  assert not out.exists()
