"""Runs the docstring examples of the pure helpers, so the docs cannot go stale."""
import doctest

import ingestion.events


def test_event_contract_doctests() -> None:
    result = doctest.testmod(ingestion.events, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
