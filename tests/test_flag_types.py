"""flows/flag_types.py: the click types the commands share."""

from __future__ import annotations

import click
import pytest

from zhflow.flows.flag_types import INTERVAL, MAX_SEED, SEED, FiniteFloatRange, OffOrAtLeast


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan")])
def test_a_finite_range_refuses_nan_and_inf(value: object) -> None:
    with pytest.raises(click.BadParameter, match="not a finite number"):
        FiniteFloatRange().convert(value, None, None)
    assert FiniteFloatRange(0, 1).convert("0.5", None, None) == 0.5


def test_off_or_at_least_takes_zero_and_n_not_between() -> None:
    kind = OffOrAtLeast(2)
    assert kind.convert("0", None, None) == 0 and kind.convert(3, None, None) == 3
    with pytest.raises(click.BadParameter, match=r"1 is neither 0 \(off\) nor >= 2"):
        kind.convert("1", None, None)
    with pytest.raises(click.BadParameter):
        kind.convert("-1", None, None)


def test_seed_and_interval_bounds() -> None:
    assert SEED.convert(MAX_SEED, None, None) == MAX_SEED
    with pytest.raises(click.BadParameter):
        SEED.convert(MAX_SEED + 1, None, None)
    # torch's generators take the seeds derived from the largest one (seed * 1000 + ...).
    assert MAX_SEED * 1000 + 500 + 10_000 < 2**63
    with pytest.raises(click.BadParameter):
        INTERVAL.convert("1e300", None, None)
    for value in ("inf", "nan"):
        with pytest.raises(click.BadParameter):
            INTERVAL.convert(value, None, None)
