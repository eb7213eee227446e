"""The critical batch size measured from training runs at equal compute.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training", eq.
2.11) model the steps S and examples E = B·S that training with batch B
needs to reach a given loss by

    (S/S_min - 1)(E/E_min - 1) = 1,

S_min the steps with an infinite batch, E_min the examples with a batch of
one. With E = B·S this is a straight line in B,

    E(B) = E_min + S_min·B,      S(B) = S_min + E_min/B,

and the critical batch size B_crit = E_min/S_min is where E is twice E_min
and S twice S_min: below it, doubling B nearly halves the steps at little
cost in examples; above it, more examples per step stop paying. They find
B_crit ≈ B_noise = tr Σ/‖G‖² (the gradient noise scale,
`vae.analysis.minibatch_noise.noise_scale`), which predicts the knee from
gradient statistics alone.

`crossing` reads E(B) off a held-out learning curve (the first point at
which the bound reaches a target, linearly interpolated between
evaluations); `fit` fits the line by least squares and returns B_crit with
its standard error over independent replicates (a fit per replicate; the
mean, and the sd over replicates / √n).
"""

from typing import Sequence

import numpy as np


def crossing(examples: Sequence[float], bounds: Sequence[float],
             target: float, resolved_from: int = 0) -> float | None:
  """The examples processed when a (maximized) bound first reaches `target`.

  With evaluations (e_i, L_i), e ascending, and the first i with L_i ≥
  target: e_i if i = 0, else the linear interpolation between (e_{i-1},
  L_{i-1}) and (e_i, L_i),

      E = e_{i-1} + (target - L_{i-1}) (e_i - e_{i-1}) / (L_i - L_{i-1}).

  A learning curve is concave, so the chord crosses later than the curve:
  the interpolation overestimates E, most in the first interval after
  initialization, where the bound rises by hundreds of nats. A crossing
  with i - 1 < `resolved_from` is reported as not resolved (None).

  Returns:
    E, or None when the curve never reaches the target (or a bound is not
    finite before it does, or the crossing is not resolved).
  """
  e = np.asarray(examples, float)
  b = np.asarray(bounds, float)
  for i in range(len(e)):
    if not np.isfinite(b[i]):
      return None
    if b[i] >= target:
      if resolved_from and i - 1 < resolved_from:
        return None
      if i == 0:
        return float(e[0])
      frac = (target - b[i - 1]) / (b[i] - b[i - 1])
      return float(e[i - 1] + frac * (e[i] - e[i - 1]))
  return None


def fit_line(batch_sizes: Sequence[float],
             examples: Sequence[float]) -> dict[str, float]:
  """Least squares E(B) = E_min + S_min·B; B_crit = E_min/S_min.

  Returns:
    {'e_min', 's_min', 'b_crit'}; b_crit is inf where S_min ≤ 0 (E does not
    grow with B over the range: every batch is below the knee) and 0 where
    E_min ≤ 0 < S_min (every batch is above it).
  """
  b = np.asarray(batch_sizes, float)
  e = np.asarray(examples, float)
  if len(np.unique(b)) < 2:
    raise ValueError('fit_line: needs at least two batch sizes.')
  slope, intercept = np.polyfit(b, e, 1)
  if slope <= 0:
    b_crit = np.inf
  else:
    b_crit = max(intercept, 0.0) / slope
  return {'e_min': float(intercept), 's_min': float(slope),
          'b_crit': float(b_crit)}


def fit(crossings: dict[int, list[float | None]]) -> dict[str, float]:
  """B_crit from E(B) of several replicates, with its standard error.

  Args:
    crossings: {B: [E of replicate r]} (None: replicate r never reached
      the target at B; its batch sizes are then left out of its fit).

  Returns:
    The pooled `fit_line` over every (B, E) point; 'b_crit_mean' and
    'b_crit_se' (sd over the per-replicate fits / √n, NaN with fewer than
    two finite fits) and 'replicates' (the number of finite fits).
  """
  points = [(b, e) for b, es in crossings.items() for e in es
            if e is not None]
  if len({b for b, _ in points}) < 2:
    raise ValueError('fit: fewer than two batch sizes reached the target.')
  pooled = fit_line(*zip(*points))
  per_rep = []
  num_reps = max(len(es) for es in crossings.values())
  for r in range(num_reps):
    pts = [(b, es[r]) for b, es in crossings.items()
           if r < len(es) and es[r] is not None]
    if len({b for b, _ in pts}) >= 2:
      per_rep.append(fit_line(*zip(*pts))['b_crit'])
  finite = np.array([v for v in per_rep if np.isfinite(v)])
  n = len(finite)
  return {**pooled, 'b_crit_mean': float(finite.mean()) if n else np.nan,
          'b_crit_se': (float(finite.std(ddof=1) / np.sqrt(n)) if n >= 2
                        else np.nan),
          'replicates': n}
