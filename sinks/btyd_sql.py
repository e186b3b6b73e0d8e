"""touchstream.domain.btyd's formulas as ClickHouse SQL, for the customer_churn view.

The view computes each buyer's four values at query time, from the stored summary, the
stream time and the latest chosen model_params row, so they age with stream time and a
new fit applies to every customer at once. The expressions below are the domain's, term
for term (tests/integration/test_churn_model.py holds them
equal on chdb and ClickHouse 18.16); they run on ClickHouse 18.16 (no log1p, no expm1, one
JOIN per SELECT).

Gauss's series is summed over ``range(N)``: the terms are the running products of the
ratios of consecutive terms, ``exp(arrayCumSum(log|ratio|))`` with the sign from the count
of negative ratios; N is
``btyd.series_terms`` (at most SERIES_MAX_SQL). Only the chosen model's series get their
N terms: the other family's are one term long.
"""

from __future__ import annotations

from touchstream.domain.btyd import (
    CALIBRATION_FEATURES,
    CLV_DAYS,
    HORIZON_DAYS,
    SERIES_EPS,
)

SERIES_MAX_SQL = 5000  # terms; more are needed only when alpha + T << CLV_DAYS
_P_MIN = 1e-9  # btyd._P_MIN


def series_terms_sql(a: str, b: str, z: str) -> str:
    """``btyd.series_terms`` in SQL (a UInt32 expression)."""
    return (
        f"if({z} <= 0, 1, toUInt32(least({SERIES_MAX_SQL}, "
        f"ceil(log({SERIES_EPS!r} * (1 - {z})) / log({z})) + ceil(abs({a}) + abs({b})) + 1)))"
    )


def ratios_sql(a: str, b: str, c: str, z: str, terms: str) -> str:
    """The ratios of consecutive terms of 2F1(a, b; c; z), ``terms`` of them (an Array)."""
    ratio = f"(({a}) + j) * (({b}) + j) / ((({c}) + j) * (j + 1)) * ({z})"
    return f"arrayMap(j -> {ratio}, range({terms}))"


def series_sql(ratios: str) -> str:
    """1 + the sum of the running products of ``ratios`` (an Array column): the series."""
    return (
        f"(1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), "
        f"arrayCumSum(arrayMap(q -> log(abs(q)), {ratios})), "
        f"arrayCumSum(arrayMap(q -> q < 0, {ratios})))))"
    )


def _f(v: float) -> str:
    return repr(float(v))


def churn_columns() -> list[tuple[str, str]]:
    """(alias, expression) layers on top of a row with the summary ``x``, ``tx``, ``T``,
    ``m`` (days, Float64), the model row's ``model``, ``p1..p4`` (BG/NBD and MBG/NBD: r,
    alpha, a, b; Pareto/NBD: r, alpha, s, beta), ``spend_p``, ``spend_q``, ``spend_v``,
    ``calibrated`` and ``w0..w5``. Each layer may use the aliases of the earlier ones."""
    h, y = _f(HORIZON_DAYS), _f(CLV_DAYS)
    bg = "model != 'pareto_nbd'"  # BG/NBD and MBG/NBD: d = -1 and 0
    layers: list[list[tuple[str, str]]] = []
    layers.append(
        [
            ("d_", "if(model = 'bgnbd', -1, 0)"),
            ("R_", "p1 + x"),
            # BG/NBD, MBG/NBD (btyd.BgNbd, btyd.MbgNbd)
            ("A_", "p3 + p4 + d_ - p1"),
            ("B_", "p3 - 1"),
            ("C_", "p3 + p4 + x + d_"),
            ("z90_", f"{h} / (p2 + T + {h})"),
            ("z365_", f"{y} / (p2 + T + {y})"),
            # Pareto/NBD (btyd.ParetoNbd._log_i, _m): a = alpha + t, b = beta + t
            *((f"a{k}_", f"p2 + {t}") for k, t in (("tx", "tx"), ("T", "T"), ("Th", f"T + {h}"))),
            *((f"b{k}_", f"p4 + {t}") for k, t in (("tx", "tx"), ("T", "T"), ("Th", f"T + {h}"))),
        ]
    )
    pn: list[tuple[str, str]] = []
    for k in ("tx", "T", "Th"):
        a, b = f"a{k}_", f"b{k}_"
        pn += [
            (f"u{k}_", f"if({a} >= {b}, R_, p3 + 1)"),
            (f"w{k}_", f"if({a} >= {b}, ({a} - {b}) / {a}, ({b} - {a}) / {b})"),
        ]
    layers.append(pn)
    nbg90 = f"if({bg}, {series_terms_sql('A_', 'B_', 'z90_')}, 1)"
    nbg365 = f"if({bg}, {series_terms_sql('A_', 'B_', 'z365_')}, 1)"
    ratios = [
        ("QF90_", ratios_sql("A_", "B_", "C_", "z90_", nbg90)),
        ("QF365_", ratios_sql("A_", "B_", "C_", "z365_", nbg365)),
    ]
    for k in ("tx", "T", "Th"):
        n = f"if({bg}, 1, {series_terms_sql(f'u{k}_', '1', f'w{k}_')})"
        ratios.append((f"QG{k}_", ratios_sql(f"u{k}_", "1", "R_ + p3 + 1", f"w{k}_", n)))
    layers.append(ratios)
    layers.append([(q[1:], series_sql(q)) for q, _ in ratios])

    def log_i(k: str) -> str:
        a, b, g = f"a{k}_", f"b{k}_", f"G{k}_"
        return (
            f"if({a} >= {b}, -R_ * log({a}) - p3 * log({b}) - log(R_ + p3) + log({g}), "
            f"(1 - R_) * log({a}) - (p3 + 1) * log({b}) - log(R_ + p3) + log({g}))"
        )

    def m_of(k: str) -> str:
        a, b, g = f"a{k}_", f"b{k}_", f"G{k}_"
        return f"if({a} >= {b}, p3 / (R_ + p3) * {g}, p3 * ({a} / {b}) / (R_ + p3) * {g})"

    def bg_alive(t: str, f: str) -> str:  # E[purchases in t | alive], BG/NBD and MBG/NBD
        return f"C_ / (p3 - 1) * (1 - pow((p2 + T) / (p2 + T + {t}), p3 - 1) * {f})"

    def pn_alive(t: str) -> str:  # Pareto/NBD
        ly = f"log((p4 + T) / (p4 + T + {t}))"
        span = f"if(p3 = 1, -{ly}, -(exp((p3 - 1) * {ly}) - 1) / (p3 - 1))"
        return f"R_ / (p2 + T) * (p4 + T) * {span}"

    layers.append(
        [
            ("log_alive_", "-R_ * log(aT_) - p3 * log(bT_)"),
            ("logI_tx_", log_i("tx")),
            ("logI_T_", log_i("T")),
            ("M_T_", m_of("T")),
            ("M_Th_", m_of("Th")),
            ("both_", "pow(aT_ / aTh_, R_) * pow(bT_ / bTh_, p3)"),
        ]
    )
    layers.append(
        [
            (
                "pa_",
                "multiIf(model = 'pareto_nbd', "
                "1 / (1 + if(tx >= T, 0, p3 * (exp(logI_tx_ - log_alive_) "
                "- exp(logI_T_ - log_alive_)))), "
                "model = 'bgnbd' AND x <= 0, 1, "
                "1 / (1 + p3 / (p4 + x + d_) * pow((p2 + T) / (p2 + tx), p1 + x)))",
            ),
            (
                "q90_",
                f"if(model = 'pareto_nbd', both_ + M_T_ - both_ * M_Th_, "
                f"pow((p2 + T) / (p2 + T + {h}), p1 + x))",
            ),
            ("g90_", f"if(model = 'pareto_nbd', {pn_alive(h)}, {bg_alive(h, 'F90_')})"),
            ("g365_", f"if(model = 'pareto_nbd', {pn_alive(y)}, {bg_alive(y, 'F365_')})"),
        ]
    )
    layers.append([("churn_raw_", "1 - pa_ + pa_ * q90_")])
    c = f"least(greatest(churn_raw_, {_P_MIN!r}), {1 - _P_MIN!r})"
    features = [
        "1",
        f"log({c} / (1 - {c}))",
        "log(1 + T - tx)",
        "log(1 + x)",
        "log(1 + T - tx) * log(1 + x)",
        "log(1 + T)",
    ]
    assert len(features) == len(CALIBRATION_FEATURES)
    logit = " + ".join(f"w{i} * {f}" for i, f in enumerate(features))
    spend = (
        "(1 - spend_p * x / (spend_p * x + spend_q - 1)) * (spend_v * spend_p / (spend_q - 1))"
        " + spend_p * x / (spend_p * x + spend_q - 1) * m"
    )
    layers.append(
        [
            ("churn_", f"if(calibrated, 1 / (1 + exp(-({logit}))), churn_raw_)"),
            ("e90_", "pa_ * g90_"),
            ("clv_", f"if(spend_q > 1, ({spend}) * pa_ * g365_, nan)"),
        ]
    )
    return _flatten(layers)


def _flatten(layers: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, layer in enumerate(layers):
        if i:
            out.append(("", ""))  # a layer boundary: a new subquery level
        out.extend(layer)
    return out


def churn_select(base: str, keep: str) -> str:
    """A SELECT of ``keep`` (columns of ``base``) and the four values, layered over
    ``base`` (a subquery with the columns churn_columns needs)."""
    sql = f"({base})"
    layer: list[str] = []
    for alias, expr in [*churn_columns(), ("", "")]:
        if alias:
            layer.append(f"{expr} AS {alias}")
            continue
        sql = f"(SELECT *, {', '.join(layer)} FROM {sql})"
        layer = []
    ok = "model_version > 0"
    return f"""SELECT {keep},
  if({ok}, toNullable(pa_), NULL) AS p_alive,
  if({ok}, toNullable(churn_), NULL) AS churn_probability_90d,
  if({ok}, toNullable(e90_), NULL) AS expected_purchases_90d,
  if({ok} AND spend_q > 1, toNullable(clv_), NULL) AS predicted_clv_365d,
  model_version, model
FROM {sql}"""
