"""Buy-till-you-die models per customer: BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma.

Pure: the math module only, no clock, no I/O (docs/churn-probability.md). Every time is in
**days** and every customer is given by lifetimes' summary: ``x`` = frequency (repeat
purchase days), ``tx`` = recency (first to last purchase day), ``T`` = age (first purchase
day to the as-of day), ``m`` = monetary_value (mean spend of the repeat purchase days).
Parameters fitted in weeks convert by ``alpha_days = 7 * alpha_weeks`` (``beta`` alike);
r, a, b, s are unitless.

Per customer and model:

* ``p_alive(x, tx, T)``: the probability that the customer has not dropped out by T;
* ``p_quiet(x, T, t)``: the probability of no purchase in (T, T + t] given alive at T;
* ``expected_alive(x, T, t)``: the expected purchases in (T, T + t] given alive at T;
* ``log_likelihood(x, tx, T)``: the model's likelihood of the history, as fitted.

From them (``Model.score``): churn probability over ``HORIZON_DAYS`` =
1 - P(alive) + P(alive) * P(no purchase | alive), which equals L(x, tx, T + t) / L(x, tx, T)
(the history with t more silent days over the history: tested); expected purchases =
P(alive) * E[purchases | alive] (lifetimes' conditional expectation, factored so the part
that depends on (x, T) only can be memoized); value = Gamma-Gamma expected spend per
purchase day x expected purchases over ``CLV_DAYS``, undiscounted.

Gauss's hypergeometric function is summed as a series, always in a form that converges
for the arguments used here: BG/NBD and MBG/NBD through Euler's transformation (the
numerator parameters become constants, the denominator grows with x), Pareto/NBD through
the integral I(a, b) below, whose series has positive terms that fall at least like z**k.
sinks/btyd_sql.py writes the same formulas as ClickHouse SQL for the customer_scores view;
a test holds the two together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

HORIZON_DAYS = 90  # churn_probability_90d and expected_purchases_90d
CLV_DAYS = 365  # predicted_clv_365d: undiscounted value of the next 365 days
MODELS = ("bgnbd", "mbgnbd", "pareto_nbd")

_lgamma, _log, _exp, _expm1 = math.lgamma, math.log, math.exp, math.expm1

SERIES_EPS = 1e-15  # relative size of the neglected tail of a series
SERIES_MAX_TERMS = 200_000


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss's 2F1(a, b; c; z) for 0 <= z < 1, summed until the neglected tail is below
    SERIES_EPS of the sum (bounded by the last term and the ratio of the terms). The
    caller picks a form that converges quickly; an ArithmeticError says if it did not."""
    if z == 0.0:
        return 1.0
    total = term = 1.0
    k = 0
    while k < SERIES_MAX_TERMS:
        ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z
        term *= ratio
        total += term
        k += 1
        if term == 0.0:
            return total
        r = abs(ratio) if abs(ratio) > z else z
        if r < 1.0 and abs(term) <= SERIES_EPS * (1.0 - r) * abs(total):
            return total
    raise ArithmeticError(
        f"hyp2f1({a}, {b}; {c}; {z}) did not converge in {SERIES_MAX_TERMS} terms"
    )


def series_terms(a: float, b: float, z: float) -> int:
    """How many terms of 2F1(a, b; c; z) (c > 0 and the terms eventually falling like
    z**k) the SQL sums: enough for the tail to be below SERIES_EPS, with a margin for the
    terms' initial growth. Python stops by the terms themselves (``hyp2f1``)."""
    if z <= 0.0:
        return 1
    return (
        int(math.ceil(math.log(SERIES_EPS * (1.0 - z)) / math.log(z)) + math.ceil(abs(a) + abs(b)))
        + 1
    )


_MEMO_MAX = 1 << 17  # memoized (x, T) values per model before the memo starts afresh


def _memo(cache: dict[Any, float], key: Any, compute: Any) -> float:
    v = cache.get(key)
    if v is None:
        if len(cache) >= _MEMO_MAX:
            cache.clear()
        v = cache[key] = compute()
    return v


@dataclass(frozen=True, slots=True)
class BgNbd:
    """BG/NBD (Fader, Hardie and Lee 2005): purchases Poisson(lambda) while alive, a drop
    out with probability p after each repeat purchase; lambda ~ Gamma(r, alpha) (alpha in
    days), p ~ Beta(a, b). A one-time buyer is always alive (P(alive) = 1)."""

    r: float
    alpha: float
    a: float
    b: float
    _memo: dict[Any, float] = field(default_factory=dict, compare=False, repr=False)

    name = "bgnbd"
    PARAMS = ("r", "alpha", "a", "b")

    def log_likelihood(self, x: float, tx: float, T: float) -> float:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        base = (
            _lgamma(r + x)
            - _lgamma(r)
            + r * _log(alpha)
            + _lgamma(a + b)
            + _lgamma(b + x)
            - _lgamma(b)
            - _lgamma(a + b + x)
        )
        alive = -(r + x) * _log(alpha + T)
        if x <= 0:
            return base + alive
        dead = _log(a) - _log(b + x - 1) - (r + x) * _log(alpha + tx)
        hi = alive if alive > dead else dead
        return base + hi + _log(_exp(alive - hi) + _exp(dead - hi))

    def p_alive(self, x: float, tx: float, T: float) -> float:
        if x <= 0:
            return 1.0
        r, alpha = self.r, self.alpha
        return 1.0 / (1.0 + self.a / (self.b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x))

    def p_quiet(self, x: float, T: float, t: float) -> float:
        """Alive at T, lambda ~ Gamma(r + x, alpha + T), and nobody drops out without
        buying: ((alpha + T) / (alpha + T + t)) ** (r + x)."""
        return ((self.alpha + T) / (self.alpha + T + t)) ** (self.r + x)

    def expected_alive(self, x: float, T: float, t: float) -> float:
        return _memo(self._memo, (x, T, t), lambda: self._expected_alive(x, T, t))

    def _expected_alive(self, x: float, T: float, t: float) -> float:
        # (a + b + x - 1) / (a - 1) * (1 - 2F1(r + x, b + x; a + b + x - 1; z) (1 - z)**(r + x))
        # with z = t / (alpha + T + t); by Euler 2F1(...) (1 - z)**(r + x) =
        # (1 - z)**(a - 1) 2F1(a + b - 1 - r, a - 1; a + b + x - 1; z).
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        c = a + b + x - 1
        f = hyp2f1(a + b - 1 - r, a - 1, c, z)
        return c / (a - 1) * (1.0 - ((alpha + T) / (alpha + T + t)) ** (a - 1) * f)


@dataclass(frozen=True, slots=True)
class MbgNbd:
    """MBG/NBD (Batislam, Denizel and Filiztekin 2007): as BG/NBD, but a customer may also
    drop out right after the first purchase, so a one-time buyer can be gone."""

    r: float
    alpha: float
    a: float
    b: float
    _memo: dict[Any, float] = field(default_factory=dict, compare=False, repr=False)

    name = "mbgnbd"
    PARAMS = ("r", "alpha", "a", "b")

    def log_likelihood(self, x: float, tx: float, T: float) -> float:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        base = (
            _lgamma(r + x)
            - _lgamma(r)
            + r * _log(alpha)
            + _lgamma(a + b)
            + _lgamma(b + x + 1)
            - _lgamma(b)
            - _lgamma(a + b + x + 1)
            - (r + x) * _log(alpha + T)
        )
        odds = _log(a) - _log(b + x) + (r + x) * (_log(alpha + T) - _log(alpha + tx))
        return base + (odds + math.log1p(_exp(-odds)) if odds > 0 else math.log1p(_exp(odds)))

    def p_alive(self, x: float, tx: float, T: float) -> float:
        r, alpha = self.r, self.alpha
        return 1.0 / (1.0 + self.a / (self.b + x) * ((alpha + T) / (alpha + tx)) ** (r + x))

    def p_quiet(self, x: float, T: float, t: float) -> float:
        return ((self.alpha + T) / (self.alpha + T + t)) ** (self.r + x)

    def expected_alive(self, x: float, T: float, t: float) -> float:
        return _memo(self._memo, (x, T, t), lambda: self._expected_alive(x, T, t))

    def _expected_alive(self, x: float, T: float, t: float) -> float:
        # (a + b + x) / (a - 1) * (1 - 2F1(r + x, b + x + 1; a + b + x; z) (1 - z)**(r + x)),
        # Euler: 2F1(...) (1 - z)**(r + x) = (1 - z)**(a - 1) 2F1(a + b - r, a - 1; a + b + x; z)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        z = t / (alpha + T + t)
        c = a + b + x
        f = hyp2f1(a + b - r, a - 1, c, z)
        return c / (a - 1) * (1.0 - ((alpha + T) / (alpha + T + t)) ** (a - 1) * f)


@dataclass(frozen=True, slots=True)
class ParetoNbd:
    """Pareto/NBD (Schmittlein, Morrison and Colombo 1987): purchases Poisson(lambda) while
    alive, an exponential(mu) lifetime; lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta)
    (alpha, beta in days). One-time buyers can be gone.

    Everything goes through I(a, b) = integral over u > 0 of (a + u)**-R (b + u)**-(s + 1),
    R = r + x: the history's likelihood is A * ((alpha + T)**-R (beta + T)**-s
    + s (I(alpha + tx, beta + tx) - I(alpha + T, beta + T))) (the second term: dropped out
    between tx and T), and E[mu / (lambda + mu)] under rates (a, b) is s a**R b**s I(a, b).
    """

    r: float
    alpha: float
    s: float
    beta: float
    _memo: dict[Any, float] = field(default_factory=dict, compare=False, repr=False)

    name = "pareto_nbd"
    PARAMS = ("r", "alpha", "s", "beta")

    def _log_i(self, R: float, a: float, b: float) -> float:
        """log I(a, b): a >= b: a**-R b**-s / (R + s) 2F1(R, 1; R + s + 1; (a - b) / a);
        a < b: a**(1 - R) b**-(s + 1) / (R + s) 2F1(s + 1, 1; R + s + 1; (b - a) / b)."""
        s = self.s
        if a >= b:
            f = hyp2f1(R, 1.0, R + s + 1, (a - b) / a)
            return -R * _log(a) - s * _log(b) - _log(R + s) + _log(f)
        f = hyp2f1(s + 1, 1.0, R + s + 1, (b - a) / b)
        return (1 - R) * _log(a) - (s + 1) * _log(b) - _log(R + s) + _log(f)

    def _dead_over_alive(self, x: float, tx: float, T: float) -> float:
        """The likelihood of having dropped out in (tx, T] over that of being alive."""
        if tx >= T:
            return 0.0
        R, alpha, s, beta = self.r + x, self.alpha, self.s, self.beta
        log_alive = -R * _log(alpha + T) - s * _log(beta + T)
        i_tx = _memo(self._memo, ("i", x, tx), lambda: self._log_i(R, alpha + tx, beta + tx))
        i_T = _memo(self._memo, ("i", x, T), lambda: self._log_i(R, alpha + T, beta + T))
        return s * (_exp(i_tx - log_alive) - _exp(i_T - log_alive))

    def log_likelihood(self, x: float, tx: float, T: float) -> float:
        r, alpha, s, beta = self.r, self.alpha, self.s, self.beta
        R = r + x
        log_alive = -R * _log(alpha + T) - s * _log(beta + T)
        return (
            _lgamma(R)
            - _lgamma(r)
            + r * _log(alpha)
            + s * _log(beta)
            + log_alive
            + math.log1p(self._dead_over_alive(x, tx, T))
        )

    def p_alive(self, x: float, tx: float, T: float) -> float:
        return 1.0 / (1.0 + self._dead_over_alive(x, tx, T))

    def _m(self, R: float, a: float, b: float) -> float:
        """E[mu / (lambda + mu)], lambda ~ Gamma(R, a), mu ~ Gamma(s, b)."""
        s = self.s
        if a >= b:
            return s / (R + s) * hyp2f1(R, 1.0, R + s + 1, (a - b) / a)
        return s * (a / b) / (R + s) * hyp2f1(s + 1, 1.0, R + s + 1, (b - a) / b)

    def p_quiet(self, x: float, T: float, t: float) -> float:
        return _memo(self._memo, ("q", x, T, t), lambda: self._p_quiet(x, T, t))

    def _p_quiet(self, x: float, T: float, t: float) -> float:
        # Given lambda, mu: no purchase in t is surviving it without buying, or dropping
        # out first: exp(-(l + m) t) + m / (l + m) (1 - exp(-(l + m) t)), averaged over the
        # posteriors Gamma(R, alpha + T), Gamma(s, beta + T) of a customer alive at T.
        R, s = self.r + x, self.s
        a, b = self.alpha + T, self.beta + T
        both = (a / (a + t)) ** R * (b / (b + t)) ** s
        return both + self._m(R, a, b) - both * self._m(R, a + t, b + t)

    def expected_alive(self, x: float, T: float, t: float) -> float:
        # (r + x) / (alpha + T) * E[(1 - exp(-mu t)) / mu], mu ~ Gamma(s, beta + T)
        b = self.beta + T
        sm1 = self.s - 1
        log_y = _log(b / (b + t))
        span = -_expm1(sm1 * log_y) / sm1 if sm1 != 0 else -log_y
        return (self.r + x) / (self.alpha + T) * b * span


PurchaseModel = BgNbd | MbgNbd | ParetoNbd
_BY_NAME: dict[str, type[BgNbd] | type[MbgNbd] | type[ParetoNbd]] = {
    "bgnbd": BgNbd,
    "mbgnbd": MbgNbd,
    "pareto_nbd": ParetoNbd,
}


def purchase_model(name: str, params: Mapping[str, float]) -> PurchaseModel:
    """A purchase model by name (MODELS) from its parameters (in days)."""
    cls = _BY_NAME.get(name)
    if cls is None:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(MODELS)}")
    values = [float(params[p]) for p in cls.PARAMS]
    return cls(*values)  # type: ignore[arg-type]  # the dataclass fields are PARAMS, in order


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Gamma-Gamma spend (Fader, Hardie and Lee 2005, note 025): a customer's spend per
    purchase day ~ Gamma(p, nu), nu ~ Gamma(q, v). Fitted on repeat buyers (x > 0, m > 0)."""

    p: float
    q: float
    v: float

    PARAMS = ("p", "q", "v")

    @property
    def usable(self) -> bool:
        """The population mean v p / (q - 1) exists only for q > 1."""
        return self.q > 1

    def expected_spend(self, x: float, m: float) -> float:
        """E[spend per purchase day | x, m]: the customer's mean, shrunk to the
        population's (a one-time buyer gets the population mean)."""
        p, q, v = self.p, self.q, self.v
        w = p * x / (p * x + q - 1)
        return (1 - w) * (v * p / (q - 1)) + w * m

    def log_likelihood(self, x: float, m: float) -> float:
        p, q, v = self.p, self.q, self.v
        px = p * x
        return (
            _lgamma(px + q)
            - _lgamma(px)
            - _lgamma(q)
            + q * _log(v)
            + (px - 1) * _log(m)
            + px * _log(x)
            - (px + q) * _log(x * m + v)
        )


CALIBRATION_FEATURES = (
    "intercept",
    "logit_churn",
    "log_recency_days",
    "log_frequency",
    "log_recency_x_log_frequency",
    "log_T",
)
_P_MIN = 1e-9


def calibration_features(
    churn: float, x: float, recency_days: float, T: float
) -> tuple[float, ...]:
    """The features of the churn calibration (CALIBRATION_FEATURES): the model's own churn
    probability as log odds, with log(1 + recency_days), log(1 + x), their product and
    log(1 + T)."""
    c = min(max(churn, _P_MIN), 1 - _P_MIN)
    lr, lx = _log(1 + recency_days), _log(1 + x)
    return (1.0, _log(c / (1 - c)), lr, lx, lr * lx, _log(1 + T))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + _exp(-z))
    e = _exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A logistic blend of the model's churn probability with recency and frequency,
    fitted on the calibration period's own split (never on data after the as-of time):
    P(no purchase in HORIZON_DAYS) = sigmoid(weights . calibration_features(...))."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(CALIBRATION_FEATURES):
            raise ValueError(
                f"calibration needs {len(CALIBRATION_FEATURES)} weights "
                f"({', '.join(CALIBRATION_FEATURES)}), got {len(self.weights)}"
            )

    def apply(self, churn: float, x: float, recency_days: float, T: float) -> float:
        """sigmoid(weights . calibration_features(churn, x, recency_days, T)), inlined."""
        w0, w1, w2, w3, w4, w5 = self.weights
        c = _P_MIN if churn < _P_MIN else 1 - _P_MIN if churn > 1 - _P_MIN else churn
        lr, lx = _log(1 + recency_days), _log(1 + x)
        return sigmoid(
            w0 + w1 * _log(c / (1 - c)) + w2 * lr + w3 * lx + w4 * lr * lx + w5 * _log(1 + T)
        )


class Scores(NamedTuple):
    p_alive: float
    churn_probability_90d: float
    expected_purchases_90d: float
    predicted_clv_365d: float | None  # None without a usable spend model


@dataclass(frozen=True, slots=True)
class Model:
    """What the stream scores customers with: the chosen purchase model, the spend model,
    the churn calibration (optional), and the version they were fitted as (model_params)."""

    version: int
    purchases: PurchaseModel
    spend: GammaGamma | None = None
    calibration: Calibration | None = None

    def churn_raw(self, x: float, tx: float, T: float, horizon: float = HORIZON_DAYS) -> float:
        """P(no purchase in (T, T + horizon]) from the purchase model alone."""
        pm = self.purchases
        pa = pm.p_alive(x, tx, T)
        return 1.0 - pa + pa * pm.p_quiet(x, T, horizon)

    def score(self, x: float, tx: float, T: float, m: float) -> Scores:
        """The four values of a customer with summary (x, tx, T, m), as of its day T."""
        pm = self.purchases
        pa = pm.p_alive(x, tx, T)
        churn = 1.0 - pa + pa * pm.p_quiet(x, T, HORIZON_DAYS)
        if self.calibration is not None:
            churn = self.calibration.apply(churn, x, T - tx, T)
        e90 = pa * pm.expected_alive(x, T, HORIZON_DAYS)
        spend = self.spend
        clv = None
        if spend is not None and spend.usable:
            clv = spend.expected_spend(x, m) * pa * pm.expected_alive(x, T, CLV_DAYS)
        return Scores(pa, churn, e90, clv)

    def to_record(self) -> dict[str, Any]:
        """The JSON form (model_params.params and friends)."""
        pm = self.purchases
        return {
            "version": self.version,
            "model": pm.name,
            "params": {p: getattr(pm, p) for p in pm.PARAMS},
            "spend": None
            if self.spend is None
            else {p: getattr(self.spend, p) for p in GammaGamma.PARAMS},
            "calibration": None if self.calibration is None else list(self.calibration.weights),
        }

    @staticmethod
    def from_record(rec: Mapping[str, Any]) -> Model:
        spend = rec.get("spend")
        cal = rec.get("calibration")
        return Model(
            int(rec["version"]),
            purchase_model(rec["model"], rec["params"]),
            None if not spend else GammaGamma(*(float(spend[p]) for p in GammaGamma.PARAMS)),
            None if not cal else Calibration(tuple(float(w) for w in cal)),
        )
