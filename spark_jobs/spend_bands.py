"""A payer account's spending band: its spend per IST month it paid in, cut at fixed edges.

The one definition of the bands. The spending_insights job (spark_jobs/spending_insights.py)
cuts the book by it as a Spark column; the console (webapp/console/insights.py) names an
account's band from what that job stored, with :func:`band_of`. Pure Python, so the
console imports it without loading pyspark.
"""

from __future__ import annotations

SPEND_BANDS: tuple[tuple[str, int | None], ...] = (("low", 10_000_00), ("mid", 1_00_000_00), ("high", None))
"""(band, upper bound in paise, exclusive) of a payer account's spending per active month:
its total before ``--until`` over the IST months it paid in. The event contract carries no
customer segment, and data replayed from elsewhere carries none either, so the customer
is cut by what every transaction does say: how much the account spends (Rs 10,000 and
Rs 1 lakh a month, the bands' edges). Fixed edges, not quantiles of the book, so that an
account's band means the same amount in every run and on every bank's data."""


def band_of(total_paise: int, months: int) -> str | None:
    """The band of an account that spent ``total_paise`` over ``months`` IST months it
    paid in; None for no months. Divided as the job divides (a double, then compared
    with each edge), so an account on an edge falls on the same side here and there.

    >>> band_of(9_999_99, 1), band_of(20_000_00, 2), band_of(20_000_00, 1), band_of(1_00_000_00, 1)
    ('low', 'mid', 'mid', 'high')
    >>> band_of(0, 0) is None
    True
    """
    if months <= 0:
        return None
    monthly = total_paise / months
    for name, below in SPEND_BANDS:
        if below is None or monthly < below:
            return name
    raise AssertionError("the last band has no upper bound")
