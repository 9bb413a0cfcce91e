"""wait_until: every wait in the project polls through it, so what it hands back matters."""

from __future__ import annotations

from txmon.infra.process import wait_until


def test_returns_what_it_waited_for():
    answers = iter([[], [], ["row"], ["later"]])
    calls = []

    def rows():
        calls.append(1)
        return next(answers)

    assert wait_until(rows, timeout=30, interval=0) == ["row"]
    assert len(calls) == 3  # stopped at the first true answer


def test_abort_stops_the_wait_with_false():
    polled = []
    assert wait_until(lambda: polled.append(1), timeout=30, interval=0, abort=lambda: len(polled) >= 2) is False
    assert len(polled) == 2


def test_after_the_timeout_the_last_answer():
    assert wait_until(lambda: 0, timeout=0) == 0
    assert wait_until(lambda: "ready", timeout=0) == "ready"
