"""Maximum-likelihood fits of the buy-till-you-die models, the choice between them, and the
churn calibration (docs/churn-probability.md). The shell: numpy and scipy, no I/O
(touchstream/model_store.py reads ClickHouse and writes model_params).

The log-likelihoods are touchstream.domain.btyd's, vectorized with numpy for the optimizer
(tests/unit/test_fitting.py holds them equal customer by customer); everything that scores
a customer (the holdout comparison, the calibration's features) calls the domain itself.
Customers with the same (x, tx, T) are fitted once, with their count as a weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

from touchstream.domain import btyd

# The optimizer may try parameters where a Pareto/NBD series converges very slowly (alpha
# and beta orders of magnitude apart): past this many terms the point counts as impossible.
SERIES_MAX_TERMS_FIT = 20_000
MIN_HOLDOUT_CUSTOMERS = 100  # fewer customers before the split: no holdout comparison
_STARTS = ((0.0, 0.0, 0.0, 0.0), (-1.0, 3.0, -0.5, 1.0), (0.5, 1.0, 0.5, 2.0))


class FitError(RuntimeError):
    """A model could not be fitted; the message says which and why."""


@dataclass(frozen=True)
class Summary:
    """lifetimes' summary of some customers, in days: numpy arrays of equal length."""

    x: np.ndarray
    tx: np.ndarray
    T: np.ndarray
    m: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.tx) == len(self.T)):
            raise ValueError("x, tx and T must have the same length")

    def __len__(self) -> int:
        return len(self.x)

    @staticmethod
    def of(rows: Sequence[Sequence[float]]) -> Summary:
        """From (x, tx, T[, m]) rows."""
        a = np.asarray(rows, dtype=float).reshape(len(rows), -1)
        return Summary(a[:, 0], a[:, 1], a[:, 2], a[:, 3] if a.shape[1] > 3 else None)


# -- the log-likelihoods, vectorized (btyd's, term for term) ------------------------------


def _hyp2f1(a: np.ndarray, b: float, c: np.ndarray, z: np.ndarray) -> np.ndarray:
    """btyd.hyp2f1, elementwise (positive terms falling at least like z**k here)."""
    total = np.ones_like(z)
    term = np.ones_like(z)
    active = z > 0
    k = 0
    while active.any():
        if k >= SERIES_MAX_TERMS_FIT:
            raise FitError("a hypergeometric series did not converge")
        ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z
        term = np.where(active, term * ratio, 0.0)
        total += term
        k += 1
        r = np.maximum(np.abs(ratio), z)
        active &= ~(
            (term == 0) | ((r < 1) & (np.abs(term) <= btyd.SERIES_EPS * (1 - r) * np.abs(total)))
        )
    return total


def _log_i(R: np.ndarray, s: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """btyd.ParetoNbd._log_i, elementwise."""
    ge = a >= b
    u = np.where(ge, R, s + 1)
    z = np.where(ge, (a - b) / a, (b - a) / b)
    f = np.log(_hyp2f1(u, 1.0, R + s + 1, z))
    return (
        np.where(ge, -R * np.log(a) - s * np.log(b), (1 - R) * np.log(a) - (s + 1) * np.log(b))
        - np.log(R + s)
        + f
    )


def log_likelihoods(
    name: str, params: Sequence[float], x: np.ndarray, tx: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Each customer's log-likelihood under model ``name`` (btyd.MODELS)."""
    if name == "bgnbd":
        r, alpha, a, b = params
        base = (
            gammaln(r + x)
            - gammaln(r)
            + r * math.log(alpha)
            + gammaln(a + b)
            + gammaln(b + x)
            - gammaln(b)
            - gammaln(a + b + x)
        )
        alive = -(r + x) * np.log(alpha + T)
        dead = math.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + tx)
        return base + np.logaddexp(alive, np.where(x > 0, dead, -np.inf))
    if name == "mbgnbd":
        r, alpha, a, b = params
        base = (
            gammaln(r + x)
            - gammaln(r)
            + r * math.log(alpha)
            + gammaln(a + b)
            + gammaln(b + x + 1)
            - gammaln(b)
            - gammaln(a + b + x + 1)
            - (r + x) * np.log(alpha + T)
        )
        odds = math.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + tx))
        return base + np.logaddexp(odds, 0.0)
    if name == "pareto_nbd":
        r, alpha, s, beta = params
        R = r + x
        log_alive = -R * np.log(alpha + T) - s * np.log(beta + T)
        dead = tx < T
        ratio = np.zeros_like(x)
        if dead.any():
            Rd = R[dead]
            i_tx = _log_i(Rd, s, alpha + tx[dead], beta + tx[dead])
            i_T = _log_i(Rd, s, alpha + T[dead], beta + T[dead])
            la = log_alive[dead]
            ratio[dead] = s * (np.exp(i_tx - la) - np.exp(i_T - la))
        return (
            gammaln(R)
            - gammaln(r)
            + r * math.log(alpha)
            + s * math.log(beta)
            + log_alive
            + np.log1p(ratio)
        )
    raise ValueError(f"unknown model {name!r}: use one of {', '.join(btyd.MODELS)}")


def spend_log_likelihoods(params: Sequence[float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """btyd.GammaGamma.log_likelihood, elementwise (x > 0, m > 0)."""
    p, q, v = params
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )


# -- fitting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    name: str
    params: dict[str, float]
    log_likelihood: float  # summed over the customers
    n: int


def _patterns(s: Summary) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows, counts = np.unique(np.column_stack([s.x, s.tx, s.T]), axis=0, return_counts=True)
    return rows[:, 0], rows[:, 1], rows[:, 2], counts.astype(float)


def _minimize(objective, starts: Sequence[Sequence[float]]) -> np.ndarray:
    best = None
    for x0 in starts:
        with np.errstate(all="ignore"):
            res = minimize(
                objective,
                np.asarray(x0, dtype=float),
                method="L-BFGS-B",
                bounds=[(-12.0, 12.0)] * len(x0),
                options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
            )
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise FitError("no starting point gave a finite likelihood")
    # polish: derivative-free from the best point (the L-BFGS-B gradient is numerical)
    with np.errstate(all="ignore"):
        res = minimize(
            objective,
            best.x,
            method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-10, "fatol": 1e-14},
        )
    return res.x if np.isfinite(res.fun) and res.fun <= best.fun else best.x


def fit_purchases(name: str, s: Summary) -> Fit:
    """Maximum likelihood of model ``name`` on the summary (parameters in its units)."""
    if len(s) == 0:
        raise FitError(f"{name}: no customers to fit")
    x, tx, T, w = _patterns(s)
    n = w.sum()
    names = btyd.ParetoNbd.PARAMS if name == "pareto_nbd" else btyd.BgNbd.PARAMS
    scale = max(float(T.max()), 1.0)  # alpha (and beta) start near the data's time scale

    def objective(logp: np.ndarray) -> float:
        p = np.exp(logp)
        p[1] *= scale
        if name == "pareto_nbd":
            p[3] *= scale
        try:
            ll = log_likelihoods(name, p, x, tx, T)
        except FitError:
            return 1e300
        v = -float(np.dot(w, ll)) / n
        return v if math.isfinite(v) else 1e300

    best = np.exp(_minimize(objective, _STARTS))
    best[1] *= scale
    if name == "pareto_nbd":
        best[3] *= scale
    ll = float(np.dot(w, log_likelihoods(name, best, x, tx, T)))
    if not math.isfinite(ll):
        raise FitError(f"{name}: the fit ended at a non-finite likelihood")
    return Fit(name, dict(zip(names, map(float, best), strict=True)), ll, int(n))


def fit_spend(s: Summary) -> btyd.GammaGamma | None:
    """Gamma-Gamma on the repeat buyers with a positive mean spend; None with fewer than 3."""
    if s.m is None:
        return None
    keep = (s.x > 0) & (s.m > 0)
    if keep.sum() < 3:
        return None
    x, m = s.x[keep], s.m[keep]

    def objective(logp: np.ndarray) -> float:
        v = -float(np.mean(spend_log_likelihoods(np.exp(logp), x, m)))
        return v if math.isfinite(v) else 1e300

    start = (0.0, 0.0, math.log(max(float(np.mean(m)), 1e-3)))
    return btyd.GammaGamma(*map(float, np.exp(_minimize(objective, [start]))))


# -- the holdout comparison and the calibration ------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """Customers as of the split day (their summary) and their repeat purchase days in the
    ``days`` after it."""

    summary: Summary
    purchases: np.ndarray
    days: int = btyd.HORIZON_DAYS


@dataclass(frozen=True)
class Candidate:
    fit: Fit  # on the whole summary
    holdout_log_loss: float | None = None  # of P(no purchase in holdout.days), per customer
    holdout_predicted: float | None = None
    holdout_actual: float | None = None
    chosen: bool = False
    choice: str = ""


@dataclass
class Report:
    candidates: list[Candidate] = field(default_factory=list)
    spend: btyd.GammaGamma | None = None
    calibration: btyd.Calibration | None = None
    calibrated_log_loss: float | None = None
    holdout_customers: int = 0
    holdout_days: int = btyd.HORIZON_DAYS

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.chosen)

    def model(self, version: int) -> btyd.Model:
        c = self.chosen
        return btyd.Model(
            version, btyd.purchase_model(c.fit.name, c.fit.params), self.spend, self.calibration
        )


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def holdout_predictions(model: btyd.Model, s: Summary, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Per customer: P(no purchase in ``days``) and the expected purchases, from the domain."""
    pm = model.purchases
    quiet, expected = np.empty(len(s)), np.empty(len(s))
    for i, (x, tx, T) in enumerate(zip(s.x.tolist(), s.tx.tolist(), s.T.tolist(), strict=True)):
        pa = pm.p_alive(x, tx, T)
        quiet[i] = 1 - pa + pa * pm.p_quiet(x, T, days)
        expected[i] = pa * pm.expected_alive(x, T, days)
    return quiet, expected


def calibration_matrix(model: btyd.Model, s: Summary, days: int) -> np.ndarray:
    quiet, _ = holdout_predictions(model, s, days)
    return np.array(
        [
            btyd.calibration_features(c, x, T - tx, T)
            for c, x, tx, T in zip(
                quiet.tolist(), s.x.tolist(), s.tx.tolist(), s.T.tolist(), strict=True
            )
        ]
    )


def fit_calibration(features: np.ndarray, quiet: np.ndarray, l2: float = 1e-4) -> btyd.Calibration:
    """Logistic regression of 'no purchase in the holdout' on the features (a small ridge
    on every weight but the intercept keeps it finite on separable data)."""
    return btyd.Calibration(tuple(map(float, logistic_weights(features, quiet, l2))))


def logistic_weights(features: np.ndarray, quiet: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """The weights of a ridge logistic regression; column 0 of ``features`` is the
    intercept (not penalised) and column 1 starts at weight 1."""
    y = quiet.astype(float)
    n = len(y)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = features @ w
        p = 1 / (1 + np.exp(-z))
        ridge = np.r_[0.0, w[1:]]
        loss = float(np.sum(np.logaddexp(0, z) - y * z)) / n + l2 * float(ridge @ ridge)
        return loss, features.T @ (p - y) / n + 2 * l2 * ridge

    start = np.zeros(features.shape[1])
    start[1] = 1.0  # the model's own log odds
    res = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 1000})
    return np.asarray(res.x, dtype=float)


def scores_customers(fit: Fit, s: Summary, sample: int = 200) -> None:
    """Raise FitError when the fitted parameters cannot score the customers they were
    fitted on (a degenerate fit: a series that does not converge, an overflow), checked
    on an even sample and the customers with the most purchases and the longest history:
    the stream must never be handed a model it cannot evaluate."""
    n = len(s)
    picks = {int(i) for i in np.linspace(0, n - 1, min(n, sample))}
    picks |= {int(np.argmax(s.x)), int(np.argmax(s.T)), int(np.argmin(s.T))}
    model = btyd.Model(0, btyd.purchase_model(fit.name, fit.params))
    for i in sorted(picks):
        try:
            model.score(float(s.x[i]), float(s.tx[i]), float(s.T[i]), 0.0)
        except (ArithmeticError, ValueError) as e:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in fit.params.items())
            raise FitError(
                f"{fit.name}: its parameters ({shown}) cannot score the customers: {e}"
            ) from e


def fit_all(full: Summary, holdout: Holdout | None, models: Sequence[str] = btyd.MODELS) -> Report:
    """Fit every model on ``full``; choose the one whose fit on the holdout's calibration
    part best predicts who buys in the holdout (log loss of P(no purchase)), and fit the
    churn calibration on the same split. Without a usable holdout the highest likelihood
    on ``full`` is chosen and nothing is calibrated."""
    if len(full) == 0:
        raise FitError("no customers to fit on")
    report = Report()
    fits, errors = {}, []
    for name in models:
        try:
            fit = fit_purchases(name, full)
            scores_customers(fit, full)
            fits[name] = fit
        except (FitError, ArithmeticError, ValueError) as e:
            errors.append(str(e) if str(e).startswith(name) else f"{name}: {e}")
    if not fits:
        raise FitError("no model could be fitted: " + "; ".join(errors))
    report.spend = fit_spend(full)
    usable = holdout is not None and len(holdout.summary) >= MIN_HOLDOUT_CUSTOMERS
    if usable:
        assert holdout is not None
        quiet = holdout.purchases == 0
        usable = bool(quiet.any() and (~quiet).any())
    if not usable:
        best = max(fits.values(), key=lambda f: f.log_likelihood)
        why = (
            "no holdout: fewer than "
            f"{MIN_HOLDOUT_CUSTOMERS} customers before the split, or all alike"
        )
        report.candidates = [
            Candidate(
                f,
                chosen=f is best,
                choice=(
                    f"highest likelihood ({why})" if f is best else f"lower likelihood ({why})"
                ),
            )
            for f in fits.values()
        ]
        return report
    assert holdout is not None
    hs, days = holdout.summary, holdout.days
    report.holdout_customers, report.holdout_days = len(hs), days
    quiet = (holdout.purchases == 0).astype(float)
    scored: dict[str, tuple[float, float, btyd.Model]] = {}
    for name in fits:
        try:
            split_fit = fit_purchases(name, hs)
        except (FitError, ArithmeticError, ValueError) as e:
            errors.append(f"on the split: {e}")
            continue
        m = btyd.Model(0, btyd.purchase_model(name, split_fit.params))
        try:
            q, expected = holdout_predictions(m, hs, days)
        except (ArithmeticError, ValueError) as e:
            errors.append(f"on the split: {name}: {e}")
            continue
        scored[name] = (log_loss(q, quiet), float(expected.sum()), m)
    if not scored:
        raise FitError("no model could be fitted on the holdout split: " + "; ".join(errors))
    best_name = min(scored, key=lambda k: scored[k][0])
    actual = float(holdout.purchases.sum())
    for name, f in fits.items():
        if name not in scored:
            report.candidates.append(Candidate(f, choice="not fitted on the holdout split"))
            continue
        ll, predicted, _ = scored[name]
        chosen = name == best_name
        choice = (
            f"best holdout log loss {ll:.4f} over {len(hs)} customers, {days} days"
            if chosen
            else f"holdout log loss {ll:.4f} > {scored[best_name][0]:.4f}"
        )
        report.candidates.append(Candidate(f, ll, predicted, actual, chosen, choice))
    if days == btyd.HORIZON_DAYS:
        features = calibration_matrix(scored[best_name][2], hs, days)
        report.calibration = fit_calibration(features, quiet)
        z = features @ np.asarray(report.calibration.weights)
        report.calibrated_log_loss = log_loss(1 / (1 + np.exp(-z)), quiet)
    return report
