"""The buy-till-you-die formulas (touchstream.domain.btyd) against lifetimes' own, customer
by customer, for the same parameters: P(alive), conditional expected purchases, the
log-likelihood, Pareto/NBD's conditional P(no purchase), Gamma-Gamma's expected spend."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter, GammaGammaFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

from touchstream.domain import btyd

TOL = 1e-6

# CDNOW-like fits in days (the full data set's maximum-likelihood values, rounded) and two
# far from it, so the series run in other regimes (a > 1, alpha >> beta).
PARAMS = {
    "bgnbd": [(0.25, 33.5, 0.72, 2.16), (1.5, 5.0, 2.5, 4.0), (0.3, 200.0, 0.2, 8.0)],
    "mbgnbd": [(0.64, 51.2, 0.81, 1.23), (1.5, 5.0, 2.5, 4.0), (0.3, 200.0, 0.2, 8.0)],
    "pareto_nbd": [(0.60, 81.1, 0.52, 61.8), (0.6, 20.0, 1.52, 400.0), (1.2, 300.0, 0.8, 9.0)],
}
LIFETIMES = {"bgnbd": BetaGeoFitter, "mbgnbd": ModifiedBetaGeoFitter, "pareto_nbd": ParetoNBDFitter}


def _customers() -> list[tuple[int, float, float]]:
    rng = random.Random(7)
    fixed = [
        (0, 0.0, 0.0),
        (0, 0.0, 30.0),
        (0, 0.0, 500.0),
        (1, 5.0, 100.0),
        (3, 40.0, 60.0),
        (10, 200.0, 210.0),
        (50, 400.0, 410.0),
        (2, 2.0, 300.0),
        (100, 480.0, 500.0),
        (5, 5.0, 5.0),
    ]
    drawn = []
    for _ in range(150):
        x = rng.randint(0, 40)
        tx = rng.uniform(0, 400) if x else 0.0
        drawn.append((x, tx, tx + rng.uniform(0, 300)))
    return fixed + drawn


CUSTOMERS = _customers()


def _fitter(name: str, params: tuple[float, ...]):
    f = LIFETIMES[name]()
    names = ["r", "alpha", "s", "beta"] if name == "pareto_nbd" else ["r", "alpha", "a", "b"]
    f.params_ = pd.Series(dict(zip(names, params, strict=True)))
    return f


def _lifetimes_ll(name: str, params: tuple[float, ...], x: float, tx: float, T: float) -> float:
    args = (np.array([x]), np.array([tx]), np.array([T]))
    if name == "pareto_nbd":
        return float(ParetoNBDFitter._conditional_log_likelihood(list(params), *args)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return -float(
            LIFETIMES[name]._negative_log_likelihood(np.log(params), *args, np.array([1]), 0.0)
        )


CASES = [(name, p) for name, ps in PARAMS.items() for p in ps]


def close(got: float, want: float) -> bool:
    return abs(got - want) <= TOL * max(1.0, abs(want))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_p_alive_equals_lifetimes_for_every_customer(name: str, params: tuple) -> None:
    ours, theirs = (
        btyd.purchase_model(name, dict(zip(_names(name), params, strict=True))),
        _fitter(name, params),
    )
    bad = [
        (c, ours.p_alive(*c), float(np.atleast_1d(theirs.conditional_probability_alive(*c))[0]))
        for c in CUSTOMERS
    ]
    assert [b for b in bad if not close(b[1], b[2])] == []


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("t", [btyd.HORIZON_DAYS, btyd.CLV_DAYS])
def test_expected_purchases_equal_lifetimes_conditional_expectation(
    name: str, params: tuple, t: int
) -> None:
    ours, theirs = (
        btyd.purchase_model(name, dict(zip(_names(name), params, strict=True))),
        _fitter(name, params),
    )
    bad = []
    for x, tx, T in CUSTOMERS:
        got = ours.p_alive(x, tx, T) * ours.expected_alive(x, T, t)
        want = float(theirs.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T))
        if not close(got, want):
            bad.append(((x, tx, T), got, want))
    assert bad == []


@pytest.mark.parametrize(("name", "params"), CASES)
def test_the_log_likelihood_equals_lifetimes(name: str, params: tuple) -> None:
    ours = btyd.purchase_model(name, dict(zip(_names(name), params, strict=True)))
    bad = [
        (c, ours.log_likelihood(*c), _lifetimes_ll(name, params, *c)) for c in CUSTOMERS if c[2] > 0
    ]
    assert [b for b in bad if not close(b[1], b[2])] == []


@pytest.mark.parametrize(("name", "params"), CASES)
def test_churn_probability_is_the_likelihood_of_the_history_with_90_more_silent_days(
    name: str, params: tuple
) -> None:
    """P(no purchase in (T, T + t]) = L(x, tx, T + t) / L(x, tx, T), from lifetimes' own
    likelihood: an independent check of 1 - P(alive) + P(alive) P(no purchase | alive)."""
    model = btyd.Model(1, btyd.purchase_model(name, dict(zip(_names(name), params, strict=True))))
    t = btyd.HORIZON_DAYS
    bad = []
    for x, tx, T in CUSTOMERS:
        if T <= 0:
            continue
        want = math.exp(
            _lifetimes_ll(name, params, x, tx, T + t) - _lifetimes_ll(name, params, x, tx, T)
        )
        got = model.churn_raw(x, tx, T)
        if not close(got, want):
            bad.append(((x, tx, T), got, want))
    assert bad == []


@pytest.mark.parametrize("params", PARAMS["pareto_nbd"])
def test_pareto_churn_equals_lifetimes_conditional_probability_of_no_purchase(
    params: tuple,
) -> None:
    model = btyd.Model(1, btyd.ParetoNbd(*params))
    theirs = _fitter("pareto_nbd", params)
    bad = []
    for x, tx, T in CUSTOMERS:
        want = float(
            theirs.conditional_probability_of_n_purchases_up_to_time(0, btyd.HORIZON_DAYS, x, tx, T)
        )
        got = model.churn_raw(x, tx, T)
        if not close(got, want):
            bad.append(((x, tx, T), got, want))
    assert bad == []


GG = (6.25, 3.74, 15.44)  # CDNOW's Gamma-Gamma fit (lifetimes' documentation)


def test_gamma_gamma_expected_spend_and_likelihood_equal_lifetimes() -> None:
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series(dict(zip("pqv", GG, strict=True)))
    ours = btyd.GammaGamma(*GG)
    rng = random.Random(3)
    spenders = [(rng.randint(1, 30), rng.uniform(1, 400)) for _ in range(100)] + [(0, 0.0)]
    for x, m in spenders:
        want = float(ggf.conditional_expected_average_profit(x, m))
        assert close(ours.expected_spend(x, m), want), (x, m)
        if x > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ll = -float(
                    GammaGammaFitter._negative_log_likelihood(
                        np.log(GG), np.array([x]), np.array([m]), np.array([1]), 0.0
                    )
                )
            assert close(ours.log_likelihood(x, m), ll), (x, m)


def test_a_one_time_buyer_is_valued_at_the_population_mean_spend() -> None:
    p, q, v = GG
    assert btyd.GammaGamma(*GG).expected_spend(0, 0.0) == pytest.approx(v * p / (q - 1))


def test_the_value_is_expected_spend_times_expected_purchases_in_365_days() -> None:
    pm = btyd.BgNbd(*PARAMS["bgnbd"][0])
    model = btyd.Model(1, pm, btyd.GammaGamma(*GG))
    theirs = _fitter("bgnbd", PARAMS["bgnbd"][0])
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series(dict(zip("pqv", GG, strict=True)))
    for x, tx, T in CUSTOMERS[:40]:
        m = 20.0 + x
        want = float(ggf.conditional_expected_average_profit(x, m)) * float(
            theirs.conditional_expected_number_of_purchases_up_to_time(365, x, tx, T)
        )
        assert close(model.score(x, tx, T, m).predicted_clv_365d, want), (x, tx, T)


def test_without_a_usable_spend_model_there_is_no_value() -> None:
    pm = btyd.BgNbd(*PARAMS["bgnbd"][0])
    assert btyd.Model(1, pm).score(2, 30, 90, 10.0).predicted_clv_365d is None
    assert (
        btyd.Model(1, pm, btyd.GammaGamma(1.0, 0.9, 5.0)).score(2, 30, 90, 10.0).predicted_clv_365d
        is None
    )


def test_bgnbd_keeps_one_time_buyers_alive_and_mbgnbd_does_not() -> None:
    assert btyd.BgNbd(*PARAMS["bgnbd"][0]).p_alive(0, 0, 300) == 1.0
    assert btyd.MbgNbd(*PARAMS["mbgnbd"][0]).p_alive(0, 0, 300) < 0.5


@pytest.mark.parametrize(("name", "params"), CASES)
def test_churn_probability_grows_with_silence(name: str, params: tuple) -> None:
    model = btyd.Model(1, btyd.purchase_model(name, dict(zip(_names(name), params, strict=True))))
    for x, tx in ((0, 0.0), (3, 60.0), (20, 200.0)):
        churn = [model.churn_raw(x, tx, tx + silent) for silent in (0, 10, 60, 200, 600)]
        assert all(0 <= c <= 1 for c in churn)
        assert churn == sorted(churn), (x, tx, churn)


def test_hyp2f1_equals_closed_forms() -> None:
    for z in (0.1, 0.5, 0.9, 0.99):
        assert btyd.hyp2f1(1, 1, 2, z) == pytest.approx(-math.log(1 - z) / z, rel=1e-13)
        assert btyd.hyp2f1(0.7, 2.3, 2.3, z) == pytest.approx((1 - z) ** -0.7, rel=1e-13)
    assert btyd.hyp2f1(-2, 1.5, 3.0, 0.4) == pytest.approx(
        1 - 2 * 1.5 / 3 * 0.4 + 1.5 * 2.5 / (3 * 4) * 0.16
    )


def test_hyp2f1_says_so_when_it_cannot_converge() -> None:
    with pytest.raises(ArithmeticError, match="did not converge"):
        btyd.hyp2f1(5, 5, 1, 1.0)


def test_the_sql_sums_enough_terms_for_the_python_series() -> None:
    """series_terms (what customer_churn sums) is at least what hyp2f1 needs."""
    for a, b, c, z in ((1.6, -0.3, 2.2, 0.92), (3.0, 1.5, 40.0, 0.6), (0.5, 1.0, 3.0, 0.3)):
        n = btyd.series_terms(a, b, z)
        term, total = 1.0, 1.0
        for k in range(n):
            term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
            total += term
        assert total == pytest.approx(btyd.hyp2f1(a, b, c, z), rel=1e-14)


def test_an_identity_calibration_returns_the_model_churn_probability() -> None:
    pm = btyd.ParetoNbd(*PARAMS["pareto_nbd"][0])
    raw = btyd.Model(1, pm)
    identity = btyd.Model(1, pm, calibration=btyd.Calibration((0, 1, 0, 0, 0, 0)))
    for x, tx, T in CUSTOMERS[:30]:
        assert identity.score(x, tx, T, 0).churn_probability_90d == pytest.approx(
            raw.churn_raw(x, tx, T), abs=1e-9
        )


def test_a_calibration_with_the_wrong_number_of_weights_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 6 weights"):
        btyd.Calibration((1.0, 2.0))


def test_a_model_record_reads_back_as_the_same_model() -> None:
    for name, params in CASES:
        m = btyd.Model(
            42,
            btyd.purchase_model(name, dict(zip(_names(name), params, strict=True))),
            btyd.GammaGamma(*GG),
            btyd.Calibration((0.1, 0.9, 0.2, -0.1, 0.01, 0.3)),
        )
        back = btyd.Model.from_record(m.to_record())
        assert back == m
        assert back.score(3, 40, 100, 25.0) == m.score(3, 40, 100, 25.0)


def test_an_unknown_model_name_is_refused_in_one_line() -> None:
    with pytest.raises(
        ValueError,
        match=r"^unknown model 'nbd': use one of bgnbd, mbgnbd, "
        r"pareto_nbd$",
    ):
        btyd.purchase_model("nbd", {})


def _names(name: str) -> tuple[str, ...]:
    return btyd.ParetoNbd.PARAMS if name == "pareto_nbd" else btyd.BgNbd.PARAMS
