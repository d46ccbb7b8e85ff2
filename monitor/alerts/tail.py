"""Peaks over threshold: the upper tail of a sample as a generalised Pareto distribution, so
that a level can be set for an exceedance probability far smaller than 1 / (sample size),
where an empirical quantile has nothing to say (extreme value theory, Pickands-Balkema-de
Haan; as used for streaming thresholds by SPOT, Siffer et al., KDD 2017).

Above an initial threshold t, the excesses Y = X - t of a sample of n values (N_t of them
exceed t) follow approximately GPD(shape ξ, scale σ), P(Y > y) = (1 + ξ y / σ)^(-1/ξ)
(exp(-y / σ) for ξ = 0). The level exceeded with probability q is then

    z_q = t + σ / ξ · ((q n / N_t)^(-ξ) - 1)        (t - σ log(q n / N_t) for ξ = 0).

The fit is the maximum-likelihood one, found with Grimshaw's reduction (Technometrics 1993)
to the roots of one function of x = ξ / σ, as SPOT does; when the likelihood has no usable
root the method of moments stands in. numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_PEAKS = 10          # excesses needed for a fit at all
# The initial threshold leaves this share of the sample above it. SPOT takes 2 % of large
# samples; minutes of footage give hundreds of values, and a dozen peaks make a noisy fit.
PEAK_FRACTION = 0.05
_GRID = 400             # points per interval searched for roots of Grimshaw's function
_EPS = 1e-9


@dataclass(frozen=True)
class ParetoFit:
    shape: float        # ξ: > 0 heavy tail, 0 exponential, < 0 bounded (endpoint t + σ / |ξ|)
    scale: float        # σ > 0
    method: str         # "mle" or "moments"


@dataclass(frozen=True)
class Tail:
    """A sample's upper tail: the empirical part up to `t`, a GPD above it."""
    t: float            # initial threshold
    n: int              # sample size
    peaks: int          # values above t (N_t)
    fit: ParetoFit
    sample: np.ndarray  # sorted, for the empirical part below t

    def level(self, q: float) -> float:
        """The level exceeded with probability q (per value)."""
        if not 0 < q < 1:
            raise ValueError(f"probability must lie in (0, 1), got {q}")
        ratio = q * self.n / self.peaks
        if ratio >= 1.0:   # within the data: the empirical quantile
            return float(np.quantile(self.sample, 1.0 - q))
        xi, sigma = self.fit.shape, self.fit.scale
        if abs(xi) < _EPS:
            return self.t - sigma * math.log(ratio)
        return self.t + sigma / xi * (ratio ** -xi - 1.0)

    def probability(self, z: float) -> float:
        """P(X >= z) per value: empirical up to t, the GPD above."""
        if z <= self.t:
            return float(np.count_nonzero(self.sample >= z)) / self.n
        xi, sigma = self.fit.shape, self.fit.scale
        y = z - self.t
        if abs(xi) < _EPS:
            tail = math.exp(-y / sigma)
        else:
            base = 1.0 + xi * y / sigma
            tail = 0.0 if base <= 0 else base ** (-1.0 / xi)
        return self.peaks / self.n * tail


def fit_tail(sample, peaks: int | None = None, min_shape: float | None = None) -> Tail:
    """Fit the tail of `sample` (1-D). The initial threshold leaves `peaks` values above it
    (default: PEAK_FRACTION of the sample, at least MIN_PEAKS). `min_shape` bounds ξ from
    below (see fit_pareto)."""
    x = np.sort(np.asarray(sample, np.float64).ravel())
    n = len(x)
    if peaks is None:
        peaks = max(MIN_PEAKS, int(math.ceil(PEAK_FRACTION * n)))
    if n < peaks + 1:
        raise ValueError(f"a tail fit needs more than {peaks} values, got {n}")
    # t: the largest value below the `peaks` largest, so that every excess is > 0 (values
    # tied with the lowest peak stay peaks: a running minimum repeats values).
    below = x[x < x[n - peaks]]
    if len(below) == 0:
        raise ValueError(f"the {peaks} largest of {n} values include the smallest: too little spread for a tail fit")
    t = float(below[-1])
    excess = x[x > t] - t
    return Tail(t, n, len(excess), fit_pareto(excess, min_shape), x)


def cluster_maxima(series: np.ndarray, t: float, run: int) -> np.ndarray:
    """The maximum of each cluster of values above t in one ordered series: exceedances less
    than `run` values apart belong to the same cluster (runs declustering)."""
    above = np.flatnonzero(series > t)
    if len(above) == 0:
        return np.empty(0)
    breaks = np.flatnonzero(np.diff(above) > run) + 1
    return np.array([series[idx].max() for idx in np.split(above, breaks)])


def fit_clustered_tail(series: list, run: int = 1, min_shape: float | None = None) -> Tail:
    """The tail of dependent series (neighbouring values move together): peaks over threshold
    on cluster maxima, so that one excursion counts once (Coles 2001, §5.3). The initial
    threshold starts at the (1 - PEAK_FRACTION) quantile of all values and comes down until
    MIN_PEAKS clusters lie above it. `level(q)` and `probability(z)` are then per value, of a
    cluster starting: with excursions declustered, of an alert starting."""
    series = [np.asarray(s, np.float64).ravel() for s in series]
    x = np.sort(np.concatenate(series)) if series else np.empty(0)
    n = len(x)
    if n <= MIN_PEAKS:
        raise ValueError(f"a tail fit needs more than {MIN_PEAKS} values, got {n}")
    for fraction in (PEAK_FRACTION, 0.1, 0.2, 0.3, 0.5):
        peaks = max(MIN_PEAKS, int(math.ceil(fraction * n)))
        if peaks >= n:
            break
        below = x[x < x[n - peaks]]
        if len(below) == 0:
            break
        t = float(below[-1])
        maxima = np.concatenate([cluster_maxima(s, t, run) for s in series])
        if len(maxima) >= MIN_PEAKS:
            return Tail(t, n, len(maxima), fit_pareto(maxima - t, min_shape), x)
    raise ValueError(f"fewer than {MIN_PEAKS} separate excursions in {n} values: too few for a tail fit")


def fit_pareto(excess, min_shape: float | None = None) -> ParetoFit:
    """GPD (shape, scale) of positive excesses: maximum likelihood (Grimshaw), else moments.

    With `min_shape` = 0 a fit whose shape comes out negative (a bounded tail, its endpoint
    close above the largest value seen) is replaced by the exponential tail (ξ = 0, the
    constrained maximum on that boundary): from a few dozen peaks the bounded fit tends to
    put the endpoint too low, and what follows exceeds it."""
    y = np.asarray(excess, np.float64)
    if len(y) < 2 or np.any(y <= 0):
        raise ValueError("a GPD fit needs at least two positive excesses")
    best = _grimshaw(y)
    best = best if best is not None else _moments(y)
    if min_shape is not None and best.shape < min_shape:
        if min_shape != 0.0:
            raise ValueError("min_shape other than 0 is not supported")
        best = ParetoFit(0.0, float(y.mean()), best.method + ", held at shape 0")
    return best


def _log_likelihood(y: np.ndarray, xi: float, sigma: float) -> float:
    if sigma <= 0:
        return -math.inf
    if abs(xi) < _EPS:
        return -len(y) * math.log(sigma) - float(y.sum()) / sigma
    z = 1.0 + xi * y / sigma
    if np.any(z <= 0):
        return -math.inf
    return -len(y) * math.log(sigma) - (1.0 + 1.0 / xi) * float(np.log(z).sum())


def _grimshaw(y: np.ndarray) -> ParetoFit | None:
    """The MLE through x = ξ / σ: at a stationary point u(x) v(x) = 1 with
    u(x) = mean(1 / (1 + x y)), v(x) = 1 + mean(log(1 + x y)), and then ξ = v(x) - 1,
    σ = ξ / x. Roots lie in (-1 / max y, 0) and (0, 2 (mean - min) / (mean · min)); each
    interval is scanned for sign changes, refined by bisection, and the candidate with the
    highest likelihood wins (the exponential, x -> 0, is always a candidate)."""
    ymax, ymin, ymean = float(y.max()), float(y.min()), float(y.mean())

    def w(x: float) -> float:
        s = 1.0 + x * y
        return float(np.mean(1.0 / s)) * (1.0 + float(np.mean(np.log(s)))) - 1.0

    grids = []
    # Negative x: from near 0 to near the pole at -1 / ymax, dense at both ends.
    h = np.concatenate([np.logspace(-10, -1, _GRID // 2), 1.0 - np.logspace(-1, -10, _GRID // 2)[1:]])
    grids.append(-h / ymax)
    upper = 2.0 * (ymean - ymin) / (ymean * ymin)
    if upper > _EPS:
        grids.append(np.logspace(math.log10(upper) - 10, math.log10(upper), _GRID))
    candidates = [ParetoFit(0.0, ymean, "mle")]
    for grid in grids:
        grid = grid[np.abs(grid) > _EPS * 1e-3]
        s = 1.0 + grid[:, None] * y[None, :]          # every grid point at once
        values = np.mean(1.0 / s, axis=1) * (1.0 + np.mean(np.log(s), axis=1)) - 1.0
        for i in np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0):
            lo, hi = float(grid[i]), float(grid[i + 1])
            flo = float(values[i])
            for _ in range(80):
                mid = 0.5 * (lo + hi)
                fmid = w(mid)
                if (fmid < 0) == (flo < 0):
                    lo, flo = mid, fmid
                else:
                    hi = mid
            x = 0.5 * (lo + hi)
            xi = float(np.mean(np.log1p(x * y)))
            if abs(xi) > _EPS:
                candidates.append(ParetoFit(xi, xi / x, "mle"))
    scored = [(_log_likelihood(y, c.shape, c.scale), c) for c in candidates if c.scale > 0]
    scored = [(ll, c) for ll, c in scored if math.isfinite(ll)]
    if not scored:
        return None
    return max(scored, key=lambda item: item[0])[1]


def _moments(y: np.ndarray) -> ParetoFit:
    """Method of moments: mean = σ / (1 - ξ), variance = σ² / ((1 - ξ)² (1 - 2ξ))."""
    mean, var = float(y.mean()), float(y.var(ddof=1)) if len(y) > 1 else 0.0
    if var <= 0:
        return ParetoFit(0.0, max(mean, _EPS), "moments")
    xi = 0.5 * (1.0 - mean * mean / var)
    return ParetoFit(xi, max(mean * (1.0 - xi), _EPS), "moments")
