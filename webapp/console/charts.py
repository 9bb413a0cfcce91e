"""Charts for the dashboard and insights pages, drawn on the server with matplotlib as
SVG (no JavaScript chart library is vendored: none comes from a Python package here).

Each function takes plain data and returns SVG text; the pages embed them as
``data:`` images, so a chart needs no second request and the CSP stays ``'self'``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime

_COLOURS = ("#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#8d99ae", "#6a4c93")


_CACHE: dict[str, str] = {}
_CACHE_SIZE = 256


def cached(fn):
    """Draw a chart once per distinct data: matplotlib takes a few hundred milliseconds a
    chart, and a dashboard reloaded while nothing changed should not pay it again."""

    def wrapper(*args, **kwargs):
        key = fn.__name__ + repr(args) + repr(sorted(kwargs.items()))
        if key not in _CACHE:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = fn(*args, **kwargs)
        return _CACHE[key]

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _figure(width: float = 6.0, height: float = 2.6, left: float = 0.1):
    # lazy: matplotlib (1.3 s to import); the scoring API imports this module without it
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    # lazy: matplotlib (3.6 s to import); the scoring API imports this module without it
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=96)
    # Fixed margins: tight_layout measured every label and doubled the drawing time.
    fig.subplots_adjust(left=left, right=0.9, top=0.88, bottom=0.22)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    return plt, fig, ax


def _data_uri(plt, fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue().encode()).decode()


@cached
def empty(title: str) -> str:
    plt, fig, ax = _figure()
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="#8d99ae")
    ax.set_xticks([])
    ax.set_yticks([])
    return _data_uri(plt, fig)


@cached
def series(
    title: str,
    times: Sequence[datetime],
    lines: dict[str, Sequence[float]],
    ylabel: str = "",
    secondary: tuple[str, Sequence[float]] | None = None,
) -> str:
    """Lines over time; ``secondary`` (name, values) on a right-hand axis (e.g. a rate)."""
    if not times:
        return empty(title)
    plt, fig, ax = _figure()
    for (name, values), colour in zip(lines.items(), _COLOURS):
        ax.plot(times, values, label=name, color=colour, linewidth=1.4)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=8)
    if secondary is not None:
        ax2 = ax.twinx()
        ax2.plot(times, secondary[1], label=secondary[0], color=_COLOURS[1], linewidth=1.2, linestyle="--")
        ax2.set_ylabel(secondary[0], fontsize=8)
        ax2.tick_params(labelsize=8)
        ax2.spines[["top"]].set_visible(False)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.autofmt_xdate()
    return _data_uri(plt, fig)


@cached
def bars(title: str, labels: Sequence[str], values: Sequence[float], xlabel: str = "") -> str:
    """Horizontal bars, largest on top."""
    if not labels:
        return empty(title)
    plt, fig, ax = _figure(height=max(1.8, 0.32 * len(labels) + 0.9), left=0.32)
    labels = [label if len(label) <= 28 else label[:27] + "…" for label in labels]
    order = list(range(len(labels)))[::-1]
    ax.barh([labels[i] for i in order], [values[i] for i in order], color=_COLOURS[0])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    return _data_uri(plt, fig)


@cached
def stacked(title: str, labels: Sequence[str], parts: dict[str, Sequence[float]]) -> str:
    """Vertical bars per label, stacked by part (e.g. decision mix per day)."""
    if not labels:
        return empty(title)
    plt, fig, ax = _figure()
    bottom = [0.0] * len(labels)
    for (name, values), colour in zip(parts.items(), _COLOURS):
        ax.bar(labels, values, bottom=bottom, label=name, color=colour)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(axis="x", labelrotation=30)
    return _data_uri(plt, fig)
