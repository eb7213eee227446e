"""Error bars over seeds: a sweep's rows summarized per setting.

A sweep over `seed` (alone or crossed with other settings) runs each
setting once per seed. `over_seeds` groups the rows of all its points by
the other swept settings, the row's position in its point and the row's
text and true/false fields (its identity: estimator, cost, ...), and gives
for each group its n (the seeds that returned that row) and, for every
numeric field whose value differs between seeds somewhere,

    <field>_mean = (1/n) Σ_s v_s,
    <field>_sd = √((1/(n-1)) Σ_s (v_s - mean)²)

(sd None when n = 1; NaN/None values are left out and counted in
<field>_n). Numeric fields equal across the seeds of every group (settings,
exact values) are kept as they are.
"""

import math
from typing import Any, Mapping, Sequence

from experiments.common import outputs

SEED = 'seed'


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def over_seeds(rows: Sequence[Mapping[str, Any]],
               settings: Sequence[str]) -> list[dict[str, Any]]:
  """The per-setting summary over seeds of a sweep's rows (module).

  Args:
    rows: each with the swept settings' values (`settings`, 'seed' among
      them), its position in its point ('row') and its results.
    settings: the swept settings.

  Returns:
    One row per group: the other swept settings, the identity fields, n,
    then `<field>_mean`, `<field>_sd` (and `<field>_n` where values were
    missing) for every numeric field that varies over seeds.
  """
  plain: list[dict[str, Any]] = [outputs.to_jsonable(dict(r)) for r in rows]
  others = [s for s in settings if s != SEED]
  groups: dict[tuple, list[dict]] = {}
  for r in plain:
    identity = tuple((k, v) for k, v in r.items()
                     if k not in settings and not _is_number(v) and
                     v is not None)
    key = (tuple(r.get(s) for s in others), r.get('row'), identity)
    groups.setdefault(key, []).append(r)
  columns = [c for c in outputs.columns_of(plain)
             if c not in (*settings, 'row')]
  varies = [c for c in columns if any(
      len({repr(r.get(c)) for r in g}) > 1 and
      any(_is_number(r.get(c)) for r in g) for g in groups.values())]
  summary = []
  for (values, _, identity), group in groups.items():
    out: dict[str, Any] = dict(zip(others, values))
    out.update(identity)
    for c in columns:
      if c not in varies and c not in out and c != SEED:
        out[c] = group[0].get(c)
    out['n'] = len(group)
    for c in varies:
      xs = [float(r[c]) for r in group
            if _is_number(r.get(c)) and math.isfinite(r[c])]
      mean = sum(xs) / len(xs) if xs else None
      out[f'{c}_mean'] = mean
      out[f'{c}_sd'] = (math.sqrt(sum((x - mean) ** 2 for x in xs) /
                                  (len(xs) - 1))
                        if mean is not None and len(xs) > 1 else None)
      if len(xs) != len(group):
        out[f'{c}_n'] = len(xs)
    summary.append(out)
  return summary


def table(summary: Sequence[Mapping[str, Any]], settings: Sequence[str],
          limit: int = 40) -> str:
  """The summary as text: settings, identity fields that differ between
  rows, n and 'mean ± sd' of each field varying over seeds."""
  if not summary:
    return '(no rows)'
  fields = [c[:-5] for c in outputs.columns_of(summary) if c.endswith('_mean')]
  keys = [c for c in outputs.columns_of(summary)
          if c != 'n' and not any(c in (f'{f}_mean', f'{f}_sd', f'{f}_n')
                                  for f in fields)
          and (c in settings or len({repr(r.get(c)) for r in summary}) > 1)]
  cells = []
  for r in summary[:limit]:
    cell = {k: r.get(k) for k in keys}
    cell['n'] = r['n']
    for f in fields:
      m, s = r.get(f'{f}_mean'), r.get(f'{f}_sd')
      cell[f] = ('-' if m is None else
                 f'{m:.4g}' + ('' if s is None else f' ± {s:.2g}'))
    cells.append(cell)
  text = outputs.format_table(cells, keys + ['n'] + fields)
  if len(summary) > limit:
    text += f'\n... {len(summary) - limit} more rows'
  return text
