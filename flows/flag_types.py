"""Click types shared by the commands (``run``, ``evaluate``, ``serve``), beside click's own."""

from __future__ import annotations

import math
from typing import Any

import click

#: The largest ``--seed``: numpy's legacy seeding range, and small enough that the seeds
#: derived from it (``seed + k`` for ensemble members, ``seed * 1000 + ...`` per epoch)
#: stay within the 64-bit integers torch's generators take.
MAX_SEED = 2**32 - 1

#: The longest schedule interval ``zhflow serve`` takes, in seconds (a year): Prefect holds
#: it as a timedelta, which overflows long before 1e300.
MAX_INTERVAL_S = 366 * 24 * 3600


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf (click's range checks let both through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


class OffOrAtLeast(click.IntRange):
    """0 (off), or an integer of at least ``least`` (``--ngram-features``: 2..N-grams)."""

    def __init__(self, least: int) -> None:
        super().__init__(min=0)
        self.least = least

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        rv = super().convert(value, param, ctx)
        if 0 < rv < self.least:
            self.fail(f"{rv} is neither 0 (off) nor >= {self.least}.", param, ctx)
        return rv


SEED = click.IntRange(0, MAX_SEED)
INTERVAL = FiniteFloatRange(min=1, max=MAX_INTERVAL_S)
