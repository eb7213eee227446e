"""Compare gradient estimators on any cost and distribution, per second too.

`compare(f, params, dist_builder, ...)` draws D independent N-sample
estimates ĝ of ∇_θ E_{q_θ}[f] with each estimator of the registry and
returns one row per (estimator, parameter leaf):

    mean        m = (1/D) Σ_d ĝ_d                       (per coordinate)
    variance    V = Σ_coords s²,  s² = Σ_d (ĝ_d - m)²/(D - 1)
    snr         ‖m‖ / √V
    seconds     wall seconds of one estimate among 256 drawn in one
                compiled call (`seconds_per_estimates`)
    efficiency  V × seconds: the variance of what one second buys, up to
                the factor 1/(estimates per second) common to all rows
                (Glynn & Whitt 1992; Mohamed et al. 2020, §6): lower wins
    exact, z    with `exact` (a tree like params): z = (m - exact)/√(s²/D)

Variance does not depend on the machine; seconds, hence efficiency, do.
`seconds_per_call` times a compiled function after warm-up (median of
repeats, round the functions in turn), `seconds_per_estimates` vmapped
batches of estimates; `ranking`
names the best estimator per sample and per second.
"""

import os
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from vae import moments
from vae import stats
from vae import types
from vae.estimators import registry

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey


def device_name() -> str:
  """The device estimates run on, e.g. 'cpu (2 cores)' or 'NVIDIA H100'."""
  device = jax.devices()[0]
  if device.platform == 'cpu':
    return f'cpu ({os.cpu_count()} cores)'
  return str(getattr(device, 'device_kind', device.platform))


def seconds_per_calls(calls: dict[Any, tuple[Callable, tuple]],
                      repeats: int = 7,
                      min_seconds: float = 0.05) -> dict[Any, float]:
  """{name: median wall seconds of one call of jit(fn)(*args)}, compiled.

  Each function is compiled ahead of time and called once (warm-up); its m
  calls per timing are doubled until they take ≥ `min_seconds` (so a fast
  function is not timed below the clock's resolution). The `repeats`
  timings go round the functions in turn, so that a change of load on a
  shared machine falls on all of them alike; each timing runs m calls back
  to back and blocks on the result, and the median of seconds/m is
  returned. Dispatch overhead is included: it is paid per call.
  """
  compiled, count = {}, {}
  for name, (fn, args) in calls.items():
    compiled[name] = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled[name](*args))
    count[name] = 1
    while _timed(compiled[name], args, count[name]) < min_seconds and (
        count[name] < 2**16):
      count[name] *= 2
  times: dict[Any, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, (_, args) in calls.items():
      times[name].append(_timed(compiled[name], args, count[name]) /
                         count[name])
  return {name: statistics.median(t) for name, t in times.items()}


def _timed(compiled: Callable, args: tuple, calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    out = compiled(*args)
  jax.block_until_ready(out)
  return time.perf_counter() - start


def seconds_per_call(fn: Callable, *args, **timing) -> float:
  """`seconds_per_calls` of one function."""
  return seconds_per_calls({0: (fn, args)}, **timing)[0]


def seconds_per_estimates(estimates: dict[Any, Callable[..., Any]],
                          key: PRNGKey, batch: int = 256,
                          **timing) -> dict[Any, float]:
  """{name: seconds of one estimate when `batch` are drawn in one call}.

  `seconds_per_calls` of vmap(estimate) on split(key, batch), / batch: for
  small problems (microseconds per estimate) one call's dispatch would
  swamp the estimate's own cost; the studies draw estimates vmapped so.
  """
  keys = jax.random.split(key, batch)
  out = seconds_per_calls({n: (jax.vmap(e), (keys,))
                           for n, e in estimates.items()}, **timing)
  return {n: t / batch for n, t in out.items()}


# Fields that depend on the machine (and vary run to run): experiments print
# them and write them to efficiency.json, and keep them out of results.json,
# which a re-run reproduces.
TIMING_FIELDS = ('seconds', 'efficiency', 'device')


def without_timing(records: Sequence[dict]) -> list[dict]:
  """Copies of `records` without TIMING_FIELDS."""
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
          for r in records]


# The fields that tell apart the comparisons of one `ranking` row (e.g. the
# points of a grid of k).
CELL_FIELDS = ('k', 'mu', 'sigma', 'step', 'epoch', 'num_samples', 'N', 'B')


def ranking(records: Sequence[dict], keys: Sequence[str],
            variance: str = 'variance',
            cell_fields: Sequence[str] = CELL_FIELDS) -> list[dict]:
  """Per value of `keys`: the best estimator per sample and per second.

  Best per sample: the least `variance`; per second: the least efficiency
  (`variance` × seconds). Rows are compared within a cell: the same `keys`
  and `cell_fields`; where a value of `keys` spans several cells (e.g. the
  k of a grid), each estimator's count of wins is given, 'pathwise 9/13'
  (wins/cells). Rows without `variance` or seconds are left out.

  Returns:
    [{**keys, 'best_per_sample', 'best_per_second'}].
  """
  cells: dict[tuple, dict[tuple, list[dict]]] = {}
  for r in records:
    if r.get(variance) is None or r.get('seconds') is None:
      continue
    label = tuple(r[k] for k in keys)
    rest = tuple((k, str(r.get(k))) for k in cell_fields if k not in keys)
    cells.setdefault(label, {}).setdefault(rest, []).append(r)
  out = []
  for label, by_rest in cells.items():
    row = dict(zip(keys, label))
    for name, score in (('best_per_sample', lambda r: r[variance]),
                        ('best_per_second',
                         lambda r: r[variance] * r['seconds'])):
      wins: dict[str, int] = {}
      for rs in by_rest.values():
        best = min(rs, key=score)['estimator']
        wins[best] = wins.get(best, 0) + 1
      order = sorted(wins, key=lambda e: -wins[e])
      row[name] = order[0] if len(by_rest) == 1 else ', '.join(
          f'{e} {wins[e]}/{len(by_rest)}' for e in order)
    out.append(row)
  return out


class Table(list):
  """Rows (dicts) of `compare`; str() is an aligned text table."""

  COLUMNS = ('estimator', 'param', 'mean', 'variance', 'snr', 'seconds',
             'efficiency', 'exact', 'z')

  def __str__(self) -> str:
    cols = [c for c in self.COLUMNS if any(c in r for r in self)]
    cell = lambda v: (f'{v:.4g}' if isinstance(v, float) else
                      np.array2string(np.asarray(v), precision=4) if
                      isinstance(v, (list, np.ndarray)) else str(v))
    body = [[cell(r.get(c, '')) for c in cols] for r in self]
    width = [max(len(c), *(len(b[i]) for b in body)) for i, c in
             enumerate(cols)]
    line = lambda xs: '  '.join(x.rjust(w) for x, w in zip(xs, width))
    device = self[0]['device'] if self else ''
    best = [f'{r["param"]}: best per sample {r["best_per_sample"]}, per '
            f'second {r["best_per_second"]}' for r in ranking(self, ['param'])]
    return '\n'.join([line(cols)] + [line(b) for b in body] + best + [
        f'seconds per estimate on {device}; efficiency = variance x '
        'seconds (lower is better)'])


def compare(f: Callable[[Array], Array], params: Params,
            dist_builder: Callable[[Params], Any],
            estimators: Sequence[str] = ('score', 'pathwise'),
            num_samples: int = 1, num_draws: int = 1000,
            key: PRNGKey | None = None, exact: Params | None = None,
            options: dict[str, dict] | None = None) -> Table:
  """Mean, variance, SNR, seconds and efficiency of each estimator.

  Estimates ∇_θ E_{q_θ}[f(z)], q_θ = dist_builder(θ), by each of
  `estimators` (registry names, `vae.estimators.registry`; each is refused
  with one line where it does not apply), D = `num_draws` times with N =
  `num_samples` samples each (module docstring for the columns).

  Args:
    f: the cost, z -> scalar (z one sample of q).
    params: θ, a pytree of arrays.
    dist_builder: θ -> a distribution of `vae.distributions`.
    estimators: registry names.
    num_samples: N per estimate.
    num_draws: D ≥ 2 estimates per estimator.
    key: PRNG key (default PRNGKey(0)); estimator e draws with
      fold_in(key, registry.name_id(e)).
    exact: the exact gradient, a tree like params; adds 'exact' and 'z'.
    options: {estimator: keyword options}, e.g. {'score_moving_average':
      {'baseline': 0.5}}.

  Returns:
    A `Table`: one row per estimator and parameter leaf ('param': its
    path), with 'device'.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  options = options or {}
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  exact_leaves = None if exact is None else jax.tree.leaves(exact)
  table, device, ones = Table(), device_name(), {}
  for name in estimators:
    registry.check(name, 'expectation', num_samples)
    estimator = registry.get(name, **options.get(name, {}))
    ones[name] = lambda k, e=estimator: e(f, params, dist_builder, k,
                                          num_samples)
  seconds_of = seconds_per_estimates(ones, key)
  for name, one in ones.items():
    out = jax.jit(lambda k, one=one: moments.moments(
        one, k, num_draws, chunk=moments.default_chunk(num_draws, 1)))(
            jax.random.fold_in(key, registry.name_id(name)))
    seconds = seconds_of[name]
    means = jax.tree.leaves(out['mean'])
    variances = jax.tree.leaves(out['variance'])
    for i, (path, _) in enumerate(leaves):
      m = np.asarray(means[i], np.float64)
      v = np.asarray(variances[i], np.float64)
      total = float(np.sum(v))
      scalar = lambda a: float(a) if a.ndim == 0 else a.tolist()
      row = {'estimator': name, 'param': '/'.join(
          str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path) or '-',
             'mean': scalar(m), 'variance': total,
             'snr': float(np.linalg.norm(m) / np.sqrt(total)) if total > 0
             else float('inf'), 'seconds': seconds,
             'efficiency': total * seconds, 'device': device,
             'num_samples': num_samples, 'num_draws': num_draws}
      if exact_leaves is not None:
        e = np.asarray(exact_leaves[i], np.float64)
        row['exact'] = scalar(e)
        row['z'] = scalar(np.asarray(stats.mean_z(m, e, np.sqrt(v),
                                                  num_draws)))
      table.append(row)
  return table
