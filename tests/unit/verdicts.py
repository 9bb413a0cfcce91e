"""A helper the unit suite's hostile-input properties share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def loads_or_names_the_problem(load: Callable[[], T], error: type[Exception]) -> T | None:
    """``load()``'s result, or None when it raised ``error`` with a message; any other
    exception (or ``error`` without a message) fails the calling test."""
    try:
        result, problem = load(), ""
    except error as exc:
        result, problem = None, str(exc)
    assert (result is None) == bool(problem)
    return result
