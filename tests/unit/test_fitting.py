"""Fitting the churn models (touchstream/fitting.py): the published parameters of the
CDNOW sample (2,357 customers, weeks) are recovered, the vectorized likelihoods are the
domain's, the choice follows the holdout, the calibration recovers a known blend."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from touchstream import fitting
from touchstream.domain import btyd


def _dataset(name: str) -> pd.DataFrame:
    import lifetimes

    return pd.read_csv(Path(lifetimes.__file__).parent / "datasets" / name)


@pytest.fixture(scope="module")
def sample() -> fitting.Summary:
    d = _dataset("cdnow_customers_summary_with_transactions.csv")
    return fitting.Summary(
        d.x.to_numpy(float), d.t_x.to_numpy(float), d["T"].to_numpy(float), d.zbar.to_numpy(float)
    )


def within_1pct(got: dict[str, float], want: dict[str, float]) -> dict[str, tuple]:
    return {k: (got[k], v) for k, v in want.items() if abs(got[k] - v) > 0.01 * abs(v)}


def test_the_bgnbd_fit_reproduces_the_papers_weekly_parameters(sample: fitting.Summary) -> None:
    """Fader, Hardie and Lee (2005), Counting your customers the easy way, on the 2,357
    customers: r 0.243, alpha 4.414, a 0.793, b 2.426, log-likelihood -9582.4."""
    fit = fitting.fit_purchases("bgnbd", sample)
    assert within_1pct(fit.params, {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}) == {}
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert fit.n == 2357


def test_the_pareto_nbd_fit_reproduces_the_published_parameters(sample: fitting.Summary) -> None:
    """The same paper's Pareto/NBD on the same customers: r 0.553, alpha 10.578, s 0.606,
    beta 11.669, log-likelihood -9595.0."""
    fit = fitting.fit_purchases("pareto_nbd", sample)
    assert within_1pct(fit.params, {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}) == {}
    assert fit.log_likelihood == pytest.approx(-9595.0, abs=0.1)


def test_the_mbgnbd_fit_equals_lifetimes_fit_of_the_same_customers(sample: fitting.Summary) -> None:
    from lifetimes import ModifiedBetaGeoFitter

    theirs = ModifiedBetaGeoFitter().fit(sample.x, sample.tx, sample.T).params_
    fit = fitting.fit_purchases("mbgnbd", sample)
    assert within_1pct(fit.params, {k: float(theirs[k]) for k in ("r", "alpha", "a", "b")}) == {}


def test_the_gamma_gamma_fit_reproduces_the_published_spend_parameters(
    sample: fitting.Summary,
) -> None:
    """Fader, Hardie and Lee (2005), RFM and CLV (note 025): p 6.25, q 3.74, v 15.44."""
    spend = fitting.fit_spend(sample)
    assert spend is not None
    got = {"p": spend.p, "q": spend.q, "v": spend.v}
    assert within_1pct(got, {"p": 6.25, "q": 3.74, "v": 15.44}) == {}


@pytest.mark.parametrize("name", btyd.MODELS)
def test_the_vectorized_likelihoods_are_the_domains_customer_by_customer(name: str) -> None:
    rng = random.Random(5)
    rows = [(0.0, 0.0, 0.0), (0.0, 0.0, 40.0)]
    for _ in range(300):
        x = rng.randint(0, 40)
        tx = rng.uniform(0, 300) if x else 0.0
        rows.append((float(x), tx, tx + rng.uniform(0, 200)))
    s = fitting.Summary.of(rows)
    for params in ((0.3, 40.0, 0.8, 2.5), (1.4, 6.0, 2.2, 30.0)):
        names = btyd.ParetoNbd.PARAMS if name == "pareto_nbd" else btyd.BgNbd.PARAMS
        domain = btyd.purchase_model(name, dict(zip(names, params, strict=True)))
        got = fitting.log_likelihoods(name, params, s.x, s.tx, s.T)
        want = np.array([domain.log_likelihood(*r) for r in rows])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_the_vectorized_spend_likelihood_is_the_domains(sample: fitting.Summary) -> None:
    gg = btyd.GammaGamma(6.25, 3.74, 15.44)
    keep = sample.x > 0
    got = fitting.spend_log_likelihoods((gg.p, gg.q, gg.v), sample.x[keep], sample.m[keep])
    want = [gg.log_likelihood(x, m) for x, m in zip(sample.x[keep], sample.m[keep], strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def _simulated(
    n: int, seed: int, split: float, horizon: float
) -> tuple[fitting.Summary, fitting.Holdout]:
    """Customers drawn from a Pareto/NBD (exponential lifetimes, so one-time buyers do
    leave), seen in full and at a split ``horizon`` days earlier."""
    rng = np.random.default_rng(seed)
    full_rows, split_rows, later = [], [], []
    for _ in range(n):
        lam, mu = rng.gamma(0.8, 1 / 25.0), rng.gamma(0.6, 1 / 80.0)
        start = rng.uniform(0, 120)
        death = start + rng.exponential(1 / mu)
        t, days = start, [start]
        while True:
            t += rng.exponential(1 / lam)
            if t > min(death, split + horizon):
                break
            days.append(t)
        d = np.floor(np.array(days))
        d = np.unique(d)
        end = split + horizon
        full_rows.append((len(d) - 1, d[-1] - d[0], np.floor(end) - d[0]))
        before = d[d <= split]
        split_rows.append((len(before) - 1, before[-1] - before[0], np.floor(split) - before[0]))
        later.append(float((d > split).sum()))
    return (
        fitting.Summary.of(full_rows),
        fitting.Holdout(fitting.Summary.of(split_rows), np.array(later), int(horizon)),
    )


def test_the_model_that_predicts_the_holdout_best_is_chosen_and_the_choice_recorded() -> None:
    full, holdout = _simulated(1500, 1, 270.0, 90.0)
    report = fitting.fit_all(full, holdout)
    losses = {c.fit.name: c.holdout_log_loss for c in report.candidates}
    assert report.chosen.fit.name == min(losses, key=losses.__getitem__)
    assert report.chosen.fit.name == "pareto_nbd"  # what the customers were drawn from
    assert report.chosen.choice.startswith("best holdout log loss")
    assert sum(c.chosen for c in report.candidates) == 1
    assert report.calibration is not None and report.calibrated_log_loss is not None
    assert report.calibrated_log_loss <= losses[report.chosen.fit.name]
    assert report.holdout_customers == len(holdout.summary)
    assert all(c.holdout_actual == holdout.purchases.sum() for c in report.candidates)


def test_without_a_usable_holdout_the_highest_likelihood_is_chosen_and_nothing_calibrated() -> None:
    full, _ = _simulated(400, 2, 270.0, 90.0)
    report = fitting.fit_all(full, None)
    best = max(report.candidates, key=lambda c: c.fit.log_likelihood)
    assert report.chosen is best and "no holdout" in best.choice
    assert report.calibration is None


def test_a_fit_without_customers_says_so_in_one_line() -> None:
    empty = fitting.Summary(np.empty(0), np.empty(0), np.empty(0))
    with pytest.raises(fitting.FitError, match=r"^no customers to fit on$"):
        fitting.fit_all(empty, None)


def test_the_calibration_recovers_a_known_logistic_blend() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    features = np.column_stack(
        [
            np.ones(n),
            rng.normal(0, 1.5, n),
            rng.uniform(0, 6, n),
            rng.uniform(0, 3, n),
            rng.uniform(0, 10, n),
            rng.uniform(3, 6, n),
        ]
    )
    w = np.array([-1.0, 0.8, 0.5, -0.7, 0.05, 0.2])
    y = rng.random(n) < 1 / (1 + np.exp(-features @ w))
    got = fitting.fit_calibration(features, y, l2=0.0)
    np.testing.assert_allclose(got.weights, w, atol=0.12)
