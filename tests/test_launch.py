"""End-to-end tests of launch.py against a temporary fake experiments package.

The fake experiments are tiny absl scripts that do not import JAX, so each
run takes a fraction of a second.
"""

import csv
import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import launch

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

FAKE = '''\
"""A fake experiment for the launcher tests.

Second paragraph, not shown by --help.
"""
import random

from absl import app
from absl import flags

from vae import cli
from vae import results

ESTIMATORS = ('pathwise', 'score')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 10, 'Number of samples.',
                                    lower_bound=1)
_ESTIMATOR = flags.DEFINE_enum('estimator', 'pathwise', ESTIMATORS,
                               'Which gradient estimator.')
_SCALE = flags.DEFINE_float('scale', 1.0, 'A scale.')
_VERBOSE = flags.DEFINE_bool('verbose', False, 'Print more.')
_TAGS = flags.DEFINE_list('tags', [], 'Some tags.')
_FAIL_ON = flags.DEFINE_integer('fail_on', -1,
                                'Fail when --num_samples equals this.')
cli.define_common_flags()
FLAGS = flags.FLAGS


def main(argv):
  del argv
  out = cli.output_dir('fake')
  results.write_config(out, FLAGS, FLAGS.seed)
  if _NUM_SAMPLES.value == _FAIL_ON.value:
    raise RuntimeError('planned failure')
  rng = random.Random(FLAGS.seed)
  records = [{'estimator': _ESTIMATOR.value, 'step': i,
              'value': rng.gauss(0.0, 1.0) * _SCALE.value,
              'num_samples': _NUM_SAMPLES.value, 'nan': float('nan'),
              'verbose': _VERBOSE.value, 'tags': _TAGS.value}
             for i in range(2)]
  print('FAKE-TABLE')
  print(results.format_table(records))
  results.write_results(out, records)


if __name__ == '__main__':
  app.run(main)
'''

OTHER = '''\
"""Another fake experiment, with a flag of the same name but another type."""
from absl import app
from absl import flags

from vae import cli
from vae import results

flags.DEFINE_string('num_samples', 'many', 'A string this time.')
flags.DEFINE_string('must', None, 'A required flag.')
flags.mark_flag_as_required('must')
cli.define_common_flags()


def main(argv):
  del argv
  results.write_results(cli.output_dir(), [{'x': 1}])


if __name__ == '__main__':
  app.run(main)
'''

# Flags the static reader cannot resolve: checked by running --helpxml.
DYNAMIC = '''\
"""Flags defined dynamically."""
from absl import app
from absl import flags

from vae import cli
from vae import results

_CHOICES = {'one': 1, 'two': 2}
for _name in ('alpha', 'beta'):
  flags.DEFINE_integer(_name, 0, 'Dynamic.')
flags.DEFINE_enum('choice', 'one', [k for k in _CHOICES], 'Not literal.')
cli.define_common_flags()


def main(argv):
  del argv
  results.write_results(cli.output_dir(), [{'alpha': flags.FLAGS.alpha}])


if __name__ == '__main__':
  app.run(main)
'''

HELPER = '''\
"""A helper module: no main, so not an experiment."""
X = 1
'''


@pytest.fixture(name='env')
def fixture_env(tmp_path, monkeypatch):
  """A fake experiments package and an empty working directory."""
  package = tmp_path / 'src' / 'experiments'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'fake.py').write_text(FAKE)
  (package / 'other.py').write_text(OTHER)
  (package / 'dynamic.py').write_text(DYNAMIC)
  (package / 'helper.py').write_text(HELPER)
  work = tmp_path / 'work'
  work.mkdir()
  monkeypatch.setenv(launch.EXPERIMENTS_DIR_ENV, str(package))
  monkeypatch.chdir(work)
  return {'package': package, 'work': work}


def _run(args, cwd):
  """Runs launch.py as a subprocess; returns (rc, stdout, stderr)."""
  proc = subprocess.run([sys.executable, str(REPO_ROOT / 'launch.py'), *args],
                        cwd=cwd, capture_output=True, text=True, timeout=120,
                        check=False)
  return proc.returncode, proc.stdout, proc.stderr


def _main(args, capsys):
  """Runs launch.main in-process; returns (rc, stdout, stderr)."""
  rc = launch.main(args)
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def _csv(path):
  return list(csv.DictReader(io.StringIO(pathlib.Path(path).read_text())))


def _json(path):
  return json.loads(pathlib.Path(path).read_text())


def test_help_lists_experiments_and_flags(env):
  rc, out, err = _run(['--help'], env['work'])
  assert rc == 0 and not err
  lines = out.splitlines()
  assert any(l.split() == ['fake', 'A', 'fake', 'experiment', 'for', 'the',
                           'launcher', 'tests.'] for l in lines)
  assert 'Another fake experiment, with a flag' in out
  assert 'helper' not in out.split('Launcher flags')[0]
  assert 'Second paragraph' not in out
  assert '--num_samples  (int >= 1; default: 10)' in out
  assert 'Number of samples.' in out
  assert "--estimator  (enum: pathwise|score; default: 'pathwise')" in out
  assert '--scale  (float; default: 1.0)' in out
  assert '--verbose  (bool; default: False)' in out
  assert "--num_samples  (string; default: 'many')" in out
  assert '--must  (string, required; default: None)' in out
  assert '--seed  (int; default: 0)' in out and '--output_dir' in out
  for flag in ('--sweep', '--parallel', '--launcher', '--dry_run',
               '--slurm_partition', '--slurm_gpus', '--slurm_time',
               '--slurm_mem', '--slurm_cpus'):
    assert flag in out
  assert 'gaussian_gradients, is missing' in out
  assert os.listdir(env['work']) == []


def test_help_for_one_experiment(env, capsys):
  rc, out, _ = _main(['--experiment=other', '--help'], capsys)
  assert rc == 0
  assert 'Flags of other' in out and 'Flags of fake' not in out


@pytest.mark.parametrize('args, message', [
    ([], "unknown experiment 'gaussian_gradients'; choose from: dynamic, "
     'fake, other'),
    (['--experiment=nope'], "unknown experiment 'nope'; choose from: "
     'dynamic, fake, other'),
    (['--experiment=nope', '--help'], "unknown experiment 'nope'"),
    (['--experiment=fake', '--bogus=1'], 'unknown flag --bogus for '
     "experiment 'fake'; choose from: --estimator, --fail_on, --num_samples, "
     '--output_dir, --scale, --seed, --tags, --verbose'),
    (['--experiment=fake', '--num_samples=ten'],
     "invalid value 'ten' for --num_samples; expected an integer"),
    (['--experiment=fake', '--num_samples', '1.5'],
     "invalid value '1.5' for --num_samples; expected an integer"),
    (['--experiment=fake', '--num_samples=0'],
     "invalid value '0' for --num_samples; must be >= 1"),
    (['--experiment=fake', '--scale=big'],
     "invalid value 'big' for --scale; expected a float"),
    (['--experiment=fake', '--verbose=maybe'],
     "invalid value 'maybe' for --verbose (bool); choose from: true, false"),
    (['--experiment=fake', '--estimator=exact'],
     "invalid value 'exact' for --estimator; choose from: pathwise, score"),
    (['--experiment=fake', '--seed=x'],
     "invalid value 'x' for --seed; expected an integer"),
    (['--experiment=fake', '--num_samples'], 'flag --num_samples needs a '
     'value'),
    (['--experiment=fake', 'stray'], "unexpected argument 'stray'"),
    (['--experiment=fake', '--sweep=num_samples'],
     "malformed --sweep 'num_samples'; expected --sweep=FLAG=V1,V2,..."),
    (['--experiment=fake', '--sweep=num_samples='],
     'empty sweep for --num_samples'),
    (['--experiment=fake', '--sweep==1,2'], "malformed --sweep '=1,2'"),
    (['--experiment=fake', '--sweep=num_samples=1,,2'],
     "empty value in --sweep 'num_samples=1,,2'"),
    (['--experiment=fake', '--sweep=num_samples=1,1'],
     "repeated value in --sweep 'num_samples=1,1'"),
    (['--experiment=fake', '--sweep=num_samples=1,x'],
     "invalid value 'x' for --num_samples in --sweep 'num_samples=1,x'; "
     'expected an integer'),
    (['--experiment=fake', '--sweep=estimator=score,exact'],
     "invalid value 'exact' for --estimator in --sweep"),
    (['--experiment=fake', '--sweep=bogus=1,2'], 'unknown flag --bogus in '
     "--sweep 'bogus=1,2' for experiment 'fake'; choose from: --estimator"),
    (['--experiment=fake', '--sweep=seed=1,2', '--sweep=seed=3'],
     '--seed is swept twice'),
    (['--experiment=fake', '--seed=1', '--sweep=seed=1,2'],
     '--seed is both set and swept'),
    (['--experiment=fake', '--sweep=output_dir=a,b'],
     '--output_dir cannot be swept'),
    (['--experiment=fake', '--parallel=0'],
     "invalid value '0' for --parallel; must be >= 1"),
    (['--experiment=fake', '--launcher=cloud'],
     "invalid value 'cloud' for --launcher; choose from: local, slurm"),
    (['--experiment=fake', '--slurm_gpus=1'],
     '--slurm_gpus needs --launcher=slurm'),
    (['--experiment=fake', '--launcher=slurm', '--slurm_time=0'],
     "invalid value '0' for --slurm_time; must be >= 1"),
    (['--experiment=other'], "missing required flag --must for experiment "
     "'other'"),
    (['--experiment=dynamic', '--alpha=x'],
     "invalid value 'x' for --alpha; expected an integer"),
    (['--experiment=dynamic', '--choice=three'],
     "invalid value 'three' for --choice; choose from: one, two"),
    (['--experiment=dynamic', '--gamma=1'], 'unknown flag --gamma'),
])
def test_errors_are_one_line_exit_2_and_create_nothing(env, capsys, args,
                                                       message):
  rc, out, err = _main(['--output_dir=should_not_exist'] + args, capsys)
  assert rc == 2
  assert out == ''
  assert err.count('\n') == 1 and err.startswith('launch.py: '), err
  assert message in err
  assert os.listdir(env['work']) == []


def test_error_from_the_command_line(env):
  rc, out, err = _run(['--experiment=fake', '--estimator=exact'],
                      env['work'])
  assert rc == 2 and out == ''
  assert err == ("launch.py: invalid value 'exact' for --estimator; choose "
                 'from: pathwise, score\n')
  assert os.listdir(env['work']) == []


def test_single_run_streams_output_and_writes_config(env):
  rc, out, err = _run(['--experiment=fake', '--num_samples', '5', '--seed=3',
                       '--verbose', '--tags=a,b'], env['work'])
  assert rc == 0, err
  assert 'FAKE-TABLE' in out  # Streamed to the terminal, not to a log.
  (run,) = (env['work'] / 'runs').iterdir()
  assert run.name.startswith('fake-')
  assert str(run) in err
  assert sorted(os.listdir(run)) == ['config.json', 'results.csv',
                                     'results.json']
  config = _json(run / 'config.json')
  assert config['seed'] == 3
  assert config['flags'] == {
      'estimator': 'pathwise', 'fail_on': -1, 'num_samples': 5,
      'output_dir': str(run), 'scale': 1.0, 'seed': 3, 'tags': ['a', 'b'],
      'verbose': True}
  assert set(config['versions']) >= {'python', 'jax', 'jaxlib', 'flax',
                                     'optax', 'chex', 'numpy'}
  assert config['jax'] is None  # The fake experiment never imports JAX.
  records = _json(run / 'results.json')
  assert [r['step'] for r in records] == [0, 1]
  assert records[0]['nan'] is None and records[0]['verbose'] is True


def test_single_run_failure_returns_its_exit_code(env, capsys):
  rc, _, err = _main(['--experiment=fake', '--num_samples=2',
                      '--fail_on=2', '--output_dir=out'], capsys)
  assert rc == 1
  assert 'failed (exit code 1)' in err


def test_default_experiment_runs_without_flags(env, capsys):
  (env['package'] / 'gaussian_gradients.py').write_text(
      FAKE.replace("'fake'", "'gaussian_gradients'"))
  rc, _, err = _main([], capsys)
  assert rc == 0, err
  (run,) = (env['work'] / 'runs').iterdir()
  assert run.name.startswith('gaussian_gradients-')
  assert (run / 'results.json').exists()


def test_results_json_is_byte_identical_across_runs(env, capsys):
  for name in ('a', 'b'):
    rc, _, err = _main(['--experiment=fake', '--seed=7', '--scale=0.1',
                        f'--output_dir={name}'], capsys)
    assert rc == 0, err
  first = (env['work'] / 'a' / 'results.json').read_bytes()
  assert first == (env['work'] / 'b' / 'results.json').read_bytes()
  assert b'NaN' not in first and b'null' in first


def test_sweep_cartesian_product(env, capsys):
  rc, out, err = _main(['--experiment=fake', '--scale=2',
                        '--sweep=num_samples=1,10',
                        '--sweep=estimator=pathwise,score',
                        '--output_dir=sweep'], capsys)
  assert rc == 0, err
  root = env['work'] / 'sweep'
  names = ['num_samples=1,estimator=pathwise', 'num_samples=1,estimator=score',
           'num_samples=10,estimator=pathwise',
           'num_samples=10,estimator=score']
  assert sorted(os.listdir(root)) == sorted(
      names + ['sweep.json', 'sweep_results.csv', 'sweep_results.json'])
  for name in names:
    assert {'log.txt', 'results.json', 'config.json'} <= set(
        os.listdir(root / name))
  config = _json(root / names[3] / 'config.json')
  assert config['flags']['num_samples'] == 10
  assert config['flags']['estimator'] == 'score'
  assert config['flags']['scale'] == 2.0
  assert 'FAKE-TABLE' in (root / names[0] / 'log.txt').read_text()
  assert '4/4 points ok' in out

  combined = _json(root / 'sweep_results.json')
  assert len(combined) == 8
  assert list(combined[0])[:2] == ['num_samples', 'estimator']
  assert [(r['num_samples'], r['estimator'], r['step']) for r in combined] == [
      (1, 'pathwise', 0), (1, 'pathwise', 1), (1, 'score', 0),
      (1, 'score', 1), (10, 'pathwise', 0), (10, 'pathwise', 1),
      (10, 'score', 0), (10, 'score', 1)]
  point_records = _json(root / names[2] / 'results.json')
  assert combined[4:6] == [{'num_samples': 10, 'estimator': 'pathwise', **r}
                           for r in point_records]
  rows = _csv(root / 'sweep_results.csv')
  assert len(rows) == 8
  assert list(rows[0])[:3] == ['num_samples', 'estimator', 'step']
  assert rows[2]['num_samples'] == '1' and rows[2]['estimator'] == 'score'

  sweep = _json(root / 'sweep.json')
  assert sweep['experiment'] == 'fake' and sweep['status'] == 'ok'
  assert sweep['sweep'] == {'num_samples': [1, 10],
                            'estimator': ['pathwise', 'score']}
  assert sweep['flags'] == ['--scale=2']
  assert [p['name'] for p in sweep['points']] == names
  assert all(p['status'] == 'ok' and p['num_records'] == 2
             for p in sweep['points'])
  assert sweep['points'][0]['command'][1:] == [
      '-m', 'experiments.fake', '--scale=2', '--num_samples=1',
      '--estimator=pathwise', f'--output_dir={root / names[0]}']


def test_sweep_with_a_failing_point(env):
  rc, out, err = _run(['--experiment=fake', '--sweep=num_samples=1,2,3',
                       '--fail_on=2', '--output_dir=sweep'], env['work'])
  assert rc == 1
  root = env['work'] / 'sweep'
  log = root / 'num_samples=2' / 'log.txt'
  assert (f"point 'num_samples=2' failed (exit code 1: RuntimeError: planned "
          f'failure); log: {log}') in err
  assert 'RuntimeError: planned failure' in log.read_text()
  assert '2/3 points ok' in out
  sweep = _json(root / 'sweep.json')
  assert [p['status'] for p in sweep['points']] == ['ok', 'failed', 'ok']
  assert sweep['points'][1]['log_path'] == str(log)
  assert sweep['num_failed'] == 1 and sweep['status'] == 'failed'
  combined = _json(root / 'sweep_results.json')
  assert sorted({r['num_samples'] for r in combined}) == [1, 3]


def test_sweep_parallel(env, capsys):
  rc, _, err = _main(['--experiment=fake', '--sweep=seed=0,1',
                      '--sweep=verbose=true,false', '--parallel=2',
                      '--output_dir=par'], capsys)
  assert rc == 0, err
  sweep = _json(env['work'] / 'par' / 'sweep.json')
  assert sweep['launcher'] == {'type': 'local', 'parallel': 2}
  assert len(sweep['points']) == 4
  rows = _csv(env['work'] / 'par' / 'sweep_results.csv')
  assert [(r['seed'], r['verbose']) for r in rows[::2]] == [
      ('0', 'true'), ('0', 'false'), ('1', 'true'), ('1', 'false')]


def test_sweep_through_submitit_local_executor(env):
  pytest.importorskip('submitit')
  # A subprocess: submitit's local executor closes the stdio that pytest-xdist
  # workers rely on, which broke every later test in the same worker.
  rc, out, err = _run(['--experiment=fake', '--sweep=num_samples=1,2',
                       '--fail_on=2', '--launcher=slurm',
                       '--slurm_cluster=local', '--slurm_partition=p',
                       '--slurm_mem=1', '--slurm_time=5', '--output_dir=sl'],
                      env['work'])
  assert rc == 1
  root = env['work'] / 'sl'
  sweep = _json(root / 'sweep.json')
  assert sweep['launcher']['type'] == 'slurm'
  assert sweep['launcher']['partition'] == 'p'
  ok, failed = sweep['points']
  assert ok['status'] == 'ok' and failed['status'] == 'failed'
  for point in (ok, failed):
    assert point['job_id']
    assert point['job_log'].startswith(str(root / 'submitit'))
    assert os.path.exists(point['job_log'])
  assert f'submitit log: {failed["job_log"]}' in err
  assert f'log: {failed["log_path"]}' in err
  combined = _json(root / 'sweep_results.json')
  assert [r['num_samples'] for r in combined] == [1, 1]
  assert '1/2 points ok' in out


def test_dry_run_prints_commands_and_creates_nothing(env, capsys):
  rc, out, err = _main(['--experiment=fake', '--noverbose', '--seed', '4',
                        '--sweep=tags=a;b,c', '--sweep=scale=0.5,1e-3',
                        '--dry_run'], capsys)
  assert rc == 0 and not err
  commands = [l for l in out.splitlines() if not l.startswith('#')]
  assert len(commands) == 4
  assert commands[0].split('/runs/fake-')[0].endswith(
      '-m experiments.fake --verbose=false --seed=4 --tags=a --scale=0.5 '
      f"--output_dir={env['work']}")
  assert commands[0].split('/runs/fake-')[1].endswith('/tags=a,scale=0.5')
  assert '--tags=b,c --scale=1e-3' in commands[3]
  assert os.listdir(env['work']) == []


def test_runtime_flags_fallback_accepts_dynamic_and_absl_flags(env, capsys):
  rc, out, err = _main(['--experiment=dynamic', '--beta=2', '--choice=two',
                        '--verbosity=1', '--dry_run'], capsys)
  assert rc == 0, err
  assert '--beta=2 --choice=two --verbosity=1' in out


def test_static_reader():
  source = textwrap.dedent('''\
      """Doc line.

      More.
      """
      from absl import flags
      from vae import cli
      VALUES = ['x', 'y']
      flags.DEFINE_integer(name='n', default=3, help='N.', upper_bound=9)
      flags.DEFINE_enum('e', 'x', sorted(VALUES), 'E ' + 'help.',
                        case_sensitive=False)
      flags.DEFINE_multi_integer('m', [1], 'M.')
      flags.DEFINE_float('f', 1 / 3, f'F {VALUES}.', required=True)
      cli.define_common_flags()
      def main(argv):
        flags.DEFINE_string('inside_main', '', 'Not module level.')
      ''')
  with pytest.MonkeyPatch.context() as mp:
    path = pathlib.Path(os.environ.get('TMPDIR', '/tmp'))
    del mp
  exp_file = path / f'_vae_static_reader_{os.getpid()}.py'
  exp_file.write_text(source)
  try:
    exp = launch.read_experiment(str(exp_file), 'experiments')
  finally:
    exp_file.unlink()
  assert exp.description == 'Doc line.'
  assert exp.calls_common
  assert list(exp.flags) == ['output_dir', 'seed', 'n', 'e', 'm', 'f']
  n, e, m, f = (exp.flags[k] for k in 'nemf')
  assert (n.type, n.default, n.help, n.upper) == ('int', '3', 'N.', 9)
  assert (e.type, e.enum_values, e.help, e.case_sensitive) == (
      'enum', ('x', 'y'), 'E help.', False)
  assert m.type == 'multi_int'
  assert (f.type, f.default, f.required) == ('float', '1 / 3', True)
  assert f.help == "f'F {VALUES}.'"
  assert launch.check_value(e, 'X', '--e') == 'X'
  with pytest.raises(launch.UsageError, match='must be <= 9'):
    launch.check_value(n, '10', '--n')
  assert launch.check_value(n, '0x9', '--n') == 9


def test_sanitize():
  assert launch.sanitize('lr=0.1,opt=adam') == 'lr=0.1,opt=adam'
  assert launch.sanitize('path=/a b/c') == 'path=_a_b_c'
  assert launch.sanitize('.hidden') == '_.hidden'
  long = launch.sanitize('x=' + 'y' * 500)
  assert len(long) <= 120 and long != launch.sanitize('x=' + 'y' * 501)
