"""RFM scores, segments, the behaviour matrix and flags: touchstream/domain/scoring.py.

The empirical quantile the sketch estimates is the LOWER one: for n sorted values
x[0] <= ... <= x[n-1], quantile(q) = x[max(ceil(q * n) - 1, 0)].
"""

from __future__ import annotations

import json
import math
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from touchstream.domain.customer import CustomerState
from touchstream.domain.scoring import (
    DEFAULT_SEGMENTS,
    QUADRANTS,
    QUINTILES,
    SEGMENTS,
    Cutoffs,
    RfmPoint,
    RfmSketches,
    behaviour_quadrant,
    cutoffs_from,
    is_key_account,
    is_transaction_buyer,
    keys_of,
    medians_from,
    point_keys,
    point_of,
    purchase_rate,
    score,
    segment,
)
from touchstream.domain.sketch import DAY_EXACT_BELOW, GAMMA, REAL, RELATIVE_ACCURACY, Sketch

PROPS = settings(max_examples=100, deadline=None)
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)  # log and exp round in the last bits


def sketch_of(values, exact_below=128) -> Sketch:
    return Sketch(exact_below=exact_below).apply((None, v) for v in values)


def lower_quantile(values, q) -> float:
    xs = sorted(values)
    return xs[max(math.ceil(Fraction(str(q)) * len(xs)) - 1, 0)]


def scores_of(values, sketch: Sketch) -> list[int]:
    cuts = tuple(sketch.cut(q) for q in QUINTILES)
    return [score(v, cuts) for v in values]


# integer-valued quantities (purchase days, day numbers) and real ones (money)
ints = st.integers(-(10**6), 10**6)
small_ints = st.integers(-127, 127)
reals = st.integers(-(10**11), 10**11).map(lambda cents: cents / 100)  # money, up to 1e9
int_lists = st.lists(ints, max_size=15)
real_lists = st.lists(reals, max_size=30)


# -- the sketch --------------------------------------------------------------------------


def test_integers_below_128_have_their_own_buckets_so_their_quantiles_are_exact():
    values = [1, 1, 1, 2, 3, 5, 8, 13, 21, 127]
    s = sketch_of(values)
    assert len(s.bins) == 8
    for q in (0, 0.1, 0.3, 0.31, 0.5, 0.9, 1):
        assert s.quantile(q) == lower_quantile(values, q)


def test_the_quantile_is_the_lower_empirical_quantile():
    s = sketch_of(range(1, 101))
    assert (s.quantile(0.2), s.quantile(0.5), s.quantile(0.205), s.quantile(1)) == (20, 50, 21, 100)
    assert s.quantile(0) == 1


def test_an_empty_sketch_has_no_quantile_and_an_out_of_range_q_is_an_error():
    with pytest.raises(ValueError):
        Sketch().quantile(0.5)
    with pytest.raises(ValueError):
        sketch_of([1]).quantile(1.5)


def test_an_integer_sketch_rejects_a_non_integer_below_128_that_a_real_sketch_keeps():
    with pytest.raises(ValueError, match="integers below 128"):
        Sketch().add(12.5)
    assert Sketch().add(12.0).quantile(0.5) == 12  # an integral float is an integer
    assert Sketch().add(200.5).count == 1  # above 128: logarithmic buckets
    assert Sketch(exact_below=REAL).add(12.5).quantile(0.5) == pytest.approx(12.5, rel=0.01)


def test_nan_infinities_and_absurd_magnitudes_are_rejected():
    for bad in (math.nan, math.inf, -math.inf, 1e301):
        with pytest.raises(ValueError):
            Sketch(exact_below=REAL).add(bad)


def test_negative_values_are_mapped_symmetrically_onto_mirrored_buckets():
    s = Sketch(exact_below=REAL)
    for v in (0.37, 5, 12.34, 999.99, 1e7):
        assert s.bucket(-v) == -s.bucket(v) != 0
    assert Sketch().bucket(-5) == -5
    refunds = [-250.0, -12.5, -0.5, 0.0, 3.25, 40.0]
    m = sketch_of(refunds, REAL)
    for q in (0, 0.2, 0.4, 0.6, 0.8, 1):
        want = lower_quantile(refunds, q)
        assert abs(m.quantile(q) - want) <= TOLERANCE * abs(want)


def test_day_numbers_have_exact_buckets_in_the_recency_sketch():
    days = [10_227, 10_228, 10_400, 20_000, 2_900_000]
    s = sketch_of(days, DAY_EXACT_BELOW)
    assert [s.quantile(q) for q in (0.2, 0.4, 0.6, 0.8, 1)] == days


def test_removing_a_value_that_is_not_in_the_sketch_raises_and_changes_nothing():
    s = sketch_of([3, 4])
    with pytest.raises(ValueError, match="not in the sketch"):
        s.remove(5)
    with pytest.raises(ValueError):
        s.apply([(4, 9), (4, 10)])  # the second remove finds no 4 left
    with pytest.raises(ValueError):
        s.apply([(7, 7)])  # even an unchanged value must be there
    assert s == sketch_of([3, 4])


def test_a_change_moves_one_count_from_the_old_bucket_to_the_new_one():
    s = sketch_of([3, 4, 4]).apply([(4, 9), (None, 1), (3, None), (9, 9)])
    assert s.to_record() == [[1, 1], [4, 1], [9, 1]]


def test_sketches_with_different_exact_buckets_do_not_merge():
    with pytest.raises(ValueError):
        Sketch().merge(Sketch(exact_below=REAL))


def test_from_record_rejects_unsorted_or_empty_bins():
    for bad in ([[2, 1], [1, 1]], [[1, 0]], [[1, 1], [1, 2]], [[1.5, 1]], [[1, -1]]):
        with pytest.raises(ValueError):
            Sketch.from_record(bad)


@PROPS
@given(st.lists(reals, max_size=20), st.lists(reals, max_size=20))
def test_merge_is_commutative(a, b):
    sa, sb = sketch_of(a, REAL), sketch_of(b, REAL)
    assert sa.merge(sb) == sb.merge(sa)


@PROPS
@given(int_lists, int_lists, int_lists)
def test_merge_is_associative(a, b, c):
    sa, sb, sc = sketch_of(a), sketch_of(b), sketch_of(c)
    assert sa.merge(sb).merge(sc) == sa.merge(sb.merge(sc)) == sa.merge(sb, sc)


@PROPS
@given(st.lists(st.tuples(st.integers(0, 7), reals), max_size=30))
def test_merging_per_partition_sketches_equals_the_sketch_of_all_values(keyed):
    parts = [sketch_of([v for p, v in keyed if p == i], REAL) for i in range(8)]
    assert reduce(Sketch.merge, parts) == sketch_of([v for _, v in keyed], REAL)
    assert Sketch(exact_below=REAL).merge(*parts) == sketch_of([v for _, v in keyed], REAL)


@PROPS
@given(st.lists(reals, min_size=1, max_size=30), st.floats(0, 1))
def test_a_real_quantile_is_within_one_percent_of_the_lower_empirical_quantile(values, q):
    s = sketch_of(values, REAL)
    for p in (q, *QUINTILES, 0.5, 0, 1):
        want = lower_quantile(values, p)
        assert abs(s.quantile(p) - want) <= TOLERANCE * abs(want)


@PROPS
@given(st.lists(st.one_of(small_ints, ints), min_size=1, max_size=30), st.floats(0, 1))
def test_an_integer_quantile_is_exact_below_128_and_within_one_percent_above(values, q):
    s = sketch_of(values)
    for p in (q, *QUINTILES, 0.5):
        want = lower_quantile(values, p)
        got = s.quantile(p)
        if abs(want) < 128:
            assert got == want
        else:
            assert abs(got - want) <= TOLERANCE * abs(want)


@PROPS
@given(real_lists, st.lists(reals, min_size=1, max_size=20))
def test_adding_then_removing_values_gives_back_the_original_sketch(base, extra):
    s = sketch_of(base, REAL)
    added = s.apply((None, v) for v in extra)
    assert added.count == s.count + len(extra)
    assert added.apply((v, None) for v in reversed(extra)) == s
    assert reduce(Sketch.remove, extra, added) == s


@PROPS
@given(st.lists(st.tuples(st.integers(0, 9), ints), max_size=30))
def test_a_batch_of_changes_equals_the_sketch_of_the_latest_values(updates):
    latest: dict[int, int] = {}
    deltas = []
    for cid, v in updates:
        deltas.append((latest.get(cid), v))
        latest[cid] = v
    s = Sketch().apply(deltas)
    assert s == sketch_of(latest.values())
    assert all(c > 0 for _, c in s.bins)


@PROPS
@given(st.lists(st.one_of(ints, small_ints), max_size=30))
def test_a_sketch_round_trips_through_json_as_sorted_bucket_count_pairs(values):
    s = sketch_of(values)
    rec = json.loads(json.dumps(s.to_record()))
    assert Sketch.from_record(rec) == s
    assert rec == sorted(rec) and all(len(pair) == 2 for pair in rec)


# -- scores ------------------------------------------------------------------------------


def test_a_value_equal_to_a_threshold_gets_the_higher_score():
    t = (20, 40, 60, 80)
    assert [score(v, t) for v in (19, 20, 39.9, 40, 80, 1e9)] == [1, 2, 2, 3, 5, 5]


def test_with_values_1_to_100_the_quintile_scores_make_five_groups_of_20():
    pop = RfmSketches().apply((None, RfmPoint(d, d, d, 1.05**d)) for d in range(1, 101))
    c = cutoffs_from(pop)
    assert c.r == c.f == (21, 41, 61, 81)
    for axis in range(3):
        groups = Counter(c.scores(RfmPoint(d, d, d, 1.05**d))[axis] for d in range(1, 101))
        assert groups == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    assert c.population == 100 and c.kind == "quantile"


def test_a_tie_group_takes_the_score_of_its_lowest_member():
    # 60% one-time buyers: they are the bottom of F, not its middle
    f = sketch_of([1] * 60 + [2] * 20 + [3] * 20)
    assert sorted(set(zip([1, 2, 3], scores_of([1, 2, 3], f), strict=True))) == [
        (1, 1),
        (2, 4),
        (3, 5),
    ]
    everyone_alike = sketch_of([7] * 10)
    assert scores_of([7], everyone_alike) == [1]


def test_fewer_than_five_customers_still_get_scores_from_1_to_5():
    assert scores_of([10], sketch_of([10])) == [1]
    assert scores_of([10, 20], sketch_of([10, 20])) == [1, 3]
    assert scores_of([10, 20, 30], sketch_of([10, 20, 30])) == [1, 2, 4]
    assert scores_of([10, 20, 30, 40], sketch_of([10, 20, 30, 40])) == [1, 2, 3, 4]
    assert scores_of([0, 10, 20, 30, 40], sketch_of([0, 10, 20, 30, 40])) == [1, 2, 3, 4, 5]
    empty = cutoffs_from(RfmSketches())
    assert empty.population == 0 and empty.r == (math.inf,) * 4
    assert empty.scores(RfmPoint(1, 1, 1, 1.0)) == (1, 1, 1)


@PROPS
@given(st.lists(small_ints, min_size=1, max_size=30))
def test_a_score_is_one_plus_the_whole_fifths_of_the_population_strictly_below(values):
    n = len(values)
    want = [1 + min(4, 5 * sum(x < v for x in values) // n) for v in values]
    assert scores_of(values, sketch_of(values)) == want


@PROPS
@given(st.lists(reals, min_size=1, max_size=30))
def test_with_money_the_same_rule_holds_at_bucket_resolution(values):
    s = sketch_of(values, REAL)
    n = len(values)
    below = [sum(s.bucket(x) < s.bucket(v) for x in values) for v in values]
    assert scores_of(values, s) == [1 + min(4, 5 * b // n) for b in below]


@PROPS
@given(
    st.lists(reals, min_size=1, max_size=30),
    st.lists(ints, min_size=1, max_size=30),
    st.lists(reals, min_size=2, max_size=10),
)
def test_scores_are_monotone_in_the_value(real_pop, int_pop, probes):
    for s in (sketch_of(real_pop, REAL), sketch_of(int_pop)):
        cuts = tuple(s.cut(q) for q in QUINTILES)
        assert list(cuts) == sorted(cuts)
        got = [score(v, cuts) for v in sorted(probes)]
        assert got == sorted(got) and all(1 <= g <= 5 for g in got)


BOUNDARY_POPULATIONS = [
    (128, [-200.5, -129, -128, -127, -1, 0, 1, 126, 127, 128, 128.5, 129, 130, 1e6]),
    (
        REAL,
        [-(GAMMA**i) for i in range(-3, 4)]
        + [GAMMA**i for i in range(-3, 4)]
        + [math.nextafter(GAMMA**i, math.inf) for i in range(-3, 4)]
        + [0.0, 0.01, 1.0],
    ),
]


@pytest.mark.parametrize(("exact_below", "values"), BOUNDARY_POPULATIONS)
def test_cuts_fall_exactly_between_buckets_even_at_bucket_boundaries(exact_below, values):
    s = sketch_of(values, exact_below)
    n = len(values)
    for k in range(1, n + 1):  # every prefix as a population
        pop = sorted(values)[:k]
        p = sketch_of(pop, exact_below)
        below = [sum(p.bucket(x) < p.bucket(v) for x in pop) for v in pop]
        assert scores_of(pop, p) == [1 + min(4, 5 * b // k) for b in below]
    assert s.count == n


@pytest.mark.parametrize(
    ("exact_below", "value"),
    [
        (128, 5),
        (128, -5),
        (128, 127),
        (128, 300.5),
        (128, -128),
        (128, -300.5),
        (REAL, 0.0),
        (REAL, 12.34),
        (REAL, -12.34),
        (REAL, -0.01),
        (DAY_EXACT_BELOW, 20_000),
    ],
)
def test_a_lone_customer_scores_1_and_anything_beyond_its_bucket_scores_5(exact_below, value):
    s = sketch_of([value], exact_below)
    cuts = tuple(s.cut(q) for q in QUINTILES)
    assert len(set(cuts)) == 1 and cuts[0] > value
    assert score(value, cuts) == 1 and score(cuts[0], cuts) == 5
    if exact_below != 128 or abs(cuts[0]) >= 128 or cuts[0].is_integer():
        assert s.bucket(cuts[0]) > s.bucket(value)


def test_fixed_cutoffs_score_recency_in_days_since_the_last_purchase_as_of_stream_time():
    c = Cutoffs.fixed(
        recency_days=(365, 180, 90, 30),
        frequency=(2, 3, 5, 8),
        monetary=(50, 100, 250, 1000),
        as_of_day=20_000,
    )
    assert c.kind == "fixed" and c.r == (19_635, 19_820, 19_910, 19_970)
    assert c.scores(RfmPoint(19_000, 19_970, 8, 1000.0)) == (5, 5, 5)  # 30 days: still 5
    assert c.scores(RfmPoint(19_000, 19_969, 7, 999.99)) == (4, 4, 4)
    assert c.scores(RfmPoint(19_000, 19_634, 1, -5.0)) == (1, 1, 1)  # 366 days ago


def test_cutoffs_must_be_four_ascending_thresholds():
    with pytest.raises(ValueError):
        Cutoffs((1, 2, 3, 4), (1, 2, 3), (1, 2, 3, 4))
    with pytest.raises(ValueError):
        Cutoffs((1, 2, 3, 4), (1, 2, 3, 4), (4, 3, 2, 1))
    with pytest.raises(ValueError):
        Cutoffs.fixed(
            recency_days=(30, 90, 180, 365),
            frequency=(1, 2, 3, 4),
            monetary=(1, 2, 3, 4),
            as_of_day=100,
        )


# -- the RFM population ------------------------------------------------------------------

points = st.builds(
    lambda first, span, days, spend: RfmPoint(first, first + span, days, spend),
    st.integers(10_000, 10_500),
    st.integers(0, 900),
    st.integers(1, 200),
    st.floats(-500, 50_000).map(lambda v: round(v, 2)),
)


@PROPS
@given(st.lists(st.tuples(st.integers(0, 12), points), max_size=15), st.integers(1, 7))
def test_rfm_sketches_fed_batches_of_changes_hold_each_customers_latest_point(updates, size):
    latest: dict[int, RfmPoint] = {}
    deltas = []
    for cid, p in updates:
        deltas.append((latest.get(cid), p))
        latest[cid] = p
    pop = RfmSketches()
    for i in range(0, len(deltas), size):
        pop = pop.apply(deltas[i : i + size])
    direct = RfmSketches().apply((None, p) for p in latest.values())
    assert pop == direct and pop.count == len(latest)
    halves = [
        RfmSketches().apply((None, p) for c, p in latest.items() if c % 2 == k) for k in (0, 1)
    ]
    assert halves[0].merge(halves[1]) == direct
    assert RfmSketches.from_record(json.loads(json.dumps(pop.to_record()))) == pop


def test_rfm_sketches_from_record_rejects_another_version():
    with pytest.raises(ValueError):
        RfmSketches.from_record([99, [], [], [], [], []])


def test_point_of_reads_a_customer_state_and_is_none_before_a_purchase():
    s = CustomerState(
        "c",
        purchase_days=(10_000, 10_030, 10_400),
        purchase_total=Decimal("120.50"),
        refund_total=Decimal("20.50"),
    )
    assert point_of(s) == RfmPoint(10_000, 10_400, 3, 100.0)
    assert point_of(CustomerState("c")) is None


def test_the_purchase_rate_counts_at_least_a_year():
    assert purchase_rate(3, 100, 130) == 3  # first year: purchase days so far
    assert purchase_rate(10, 0, 729) == 5  # two years active
    assert RfmPoint(0, 729, 10, 250.0).rate == 5 and RfmPoint(0, 729, 10, 250.0).amount == 25


# -- segments ----------------------------------------------------------------------------


def test_the_default_segment_map_covers_all_25_cells_with_only_the_ten_names():
    cells = {(r, f): segment(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert len(cells) == 25 and set(cells.values()) == set(SEGMENTS) and len(SEGMENTS) == 10
    assert len(DEFAULT_SEGMENTS) == 5 and all(len(row) == 5 for row in DEFAULT_SEGMENTS)


@pytest.mark.parametrize(
    ("r", "f", "name"),
    [
        (5, 5, "champions"),
        (5, 4, "champions"),
        (1, 5, "cant_lose"),
        (2, 5, "cant_lose"),
        (1, 1, "hibernating"),
        (2, 2, "hibernating"),
        (5, 1, "new"),
        (4, 1, "promising"),
        (3, 3, "need_attention"),
        (3, 1, "about_to_sleep"),
        (3, 2, "about_to_sleep"),
        (1, 3, "at_risk"),
        (2, 4, "at_risk"),
        (3, 4, "loyal"),
        (3, 5, "loyal"),
        (4, 5, "loyal"),
        (4, 2, "potential_loyalists"),
        (5, 3, "potential_loyalists"),
    ],
)
def test_the_default_map_names_each_r_f_cell_as_the_common_segment_map_does(r, f, name):
    assert segment(r, f) == name


def test_another_segment_map_can_be_passed_as_a_grid_or_a_mapping():
    grid = [["low"] * 5] * 2 + [["mid"] * 5] + [["high"] * 5] * 2
    assert (segment(1, 5, grid), segment(3, 1, grid), segment(5, 5, grid)) == ("low", "mid", "high")
    assert segment(2, 3, {(2, 3): "special"}) == "special"
    with pytest.raises(ValueError):
        segment(0, 3)


# -- the behaviour matrix and flags ------------------------------------------------------


def test_the_behaviour_matrix_has_four_quadrants_and_a_threshold_value_counts_as_high():
    q = [
        behaviour_quadrant(rate, amount, 4, 50)
        for rate, amount in ((4, 50), (12, 10), (1, 300), (1, 49.99))
    ]
    assert q == list(QUADRANTS) == ["best", "frequent_low_spend", "rare_high_spend", "uncertain"]


def test_the_default_thresholds_split_the_population_at_its_medians():
    pop = RfmSketches().apply((None, RfmPoint(0, 0, d, d * 10 * 1.05**d)) for d in range(1, 101))
    rate_cut, amount_cut = medians_from(pop)
    assert 50 < rate_cut <= 51  # rate = purchase days in the first year: 51..100 frequent
    rates = [RfmPoint(0, 0, d, d * 10 * 1.05**d).rate for d in range(1, 101)]
    amounts = [RfmPoint(0, 0, d, d * 10 * 1.05**d).amount for d in range(1, 101)]
    assert sum(r >= rate_cut for r in rates) == sum(a >= amount_cut for a in amounts) == 50
    assert medians_from(RfmSketches()) == (math.inf, math.inf)
    assert behaviour_quadrant(1, 1, *medians_from(RfmSketches())) == "uncertain"


def test_a_key_account_is_top_spend_a_year_long_four_purchase_days_and_not_declining():
    assert is_key_account(5, 365, 4, False)
    assert not is_key_account(4, 400, 10, False)  # not in the top 20% by net spend
    assert not is_key_account(5, 364, 10, False)  # under a year
    assert not is_key_account(5, 800, 3, False)  # too few purchase days
    assert not is_key_account(5, 800, 10, True)  # in decline
    assert is_key_account(4, 200, 2, False, min_m_score=4, min_tenure_days=180, min_purchase_days=2)


def test_a_transaction_buyer_bought_on_one_day_at_least_90_days_ago():
    assert is_transaction_buyer(1, 90)
    assert not is_transaction_buyer(1, 89)  # may still come back
    assert not is_transaction_buyer(2, 400)  # came back: a relationship buyer
    assert is_transaction_buyer(1, 30, min_days=30)


# -- bucket keys: what the worker moves --------------------------------------------------

states = st.builds(
    lambda days, bought, refunded: CustomerState(
        "c", purchase_days=tuple(sorted(set(days))), purchase_total=bought, refund_total=refunded
    ),
    st.lists(st.integers(-5_000_000, 5_000_000) | st.integers(19_000, 21_000), max_size=200),
    st.decimals(0, 10**12, places=4) | st.sampled_from([Decimal(0), Decimal("0.5")]),
    st.decimals(0, 10**9, places=4) | st.just(Decimal(0)),
)


@PROPS
@given(states)
def test_point_keys_are_the_buckets_of_the_customers_point(state):
    assert point_keys(state) == keys_of(point_of(state))


@PROPS
@given(st.lists(st.tuples(st.integers(0, 12), points | st.none()), max_size=15), st.integers(1, 7))
def test_moving_bucket_keys_gives_the_sketches_that_applying_the_points_gives(updates, size):
    latest: dict[int, RfmPoint | None] = {}
    deltas = []
    for cid, p in updates:
        deltas.append((latest.get(cid), p))
        latest[cid] = p
    by_points = by_keys = RfmSketches()
    for i in range(0, len(deltas), size):
        batch = deltas[i : i + size]
        by_points = by_points.apply(batch)
        by_keys = by_keys.move((keys_of(a), keys_of(b)) for a, b in batch)
    assert by_keys == by_points


def test_moving_keys_that_are_not_in_the_sketches_raises_unless_told_to_count_afresh():
    a, b = RfmPoint(10_000, 10_010, 2, 50.0), RfmPoint(10_000, 10_020, 3, 80.0)
    pop = RfmSketches().move([(None, keys_of(a))])
    with pytest.raises(ValueError, match="not in the sketch"):
        pop.move([(keys_of(b), keys_of(a))])
    assert pop.move([(keys_of(b), keys_of(a))], strict=False) == RfmSketches().apply(
        [(None, a), (None, a)]
    )
    assert pop.move([(keys_of(a), keys_of(b))], strict=False) == RfmSketches().apply([(None, b)])
