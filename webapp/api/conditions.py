"""Rule conditions evaluated on one row in Python, with Spark SQL's semantics.

The rules file (config/rules.yaml, loaded by :mod:`txmon.models.rules`) writes each
condition as a Spark SQL expression, and the stream evaluates it with Spark. A synchronous
API cannot start a Spark job per request (hundreds of milliseconds), so the same text is
compiled here into a small Python evaluator for the part of Spark SQL rules use:

- comparisons ``= == != <> < <= > >=``, ``AND OR NOT``, ``IN (...)``, ``NOT IN``,
  ``BETWEEN``, ``IS [NOT] NULL``, arithmetic ``+ - * / %``, parentheses;
- literals (integers, decimals, 'strings', TRUE, FALSE, NULL) and column names;
- ``coalesce``, ``abs``, ``greatest``, ``least``, ``lower``, ``upper``.

NULL follows SQL's three-valued logic as Spark does (a comparison with NULL is NULL,
``false AND NULL`` is false, ``x IN (..., NULL)`` without a match is NULL), and a rule
fires only when its condition is true (the stream's ``coalesce(condition, false)``).
Division by zero gives NULL (Spark's ``try_divide``; the stream, in ANSI mode, would fail
the micro-batch instead, so no rule in service divides by a value that can be zero).

Anything outside this subset is refused when the rules are loaded, naming the rule, so
the API never guesses at a rule it cannot evaluate exactly; the parity test
(tests/integration/test_api_parity.py) holds its answers to the stream's.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from typing import Any

from txmon.models.rules import RulesError

Row = dict
Evaluator = Callable[[Row], Any]

__all__ = ["ConditionError", "compile_condition"]

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<name>[A-Za-z_][A-Za-z_0-9]*|`[^`]+`)
    | (?P<op><=>|<=|>=|<>|!=|==|[-+*/%=<>(),])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "BETWEEN"}


class ConditionError(RulesError):
    """A condition uses Spark SQL the API cannot evaluate exactly."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ConditionError(f"cannot read {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group("number") is not None:
            raw = m.group("number")
            out.append(("lit", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif m.group("string") is not None:
            body = m.group("string")[1:-1]
            out.append(("lit", re.sub(r"\\(.)|''", lambda s: s.group(1) or "'", body)))
        elif m.group("name") is not None:
            name = m.group("name")
            if name.startswith("`"):
                out.append(("name", name[1:-1]))
            elif name.upper() in _KEYWORDS:
                out.append(("kw", name.upper()))
            else:
                out.append(("name", name))
        else:
            out.append(("op", m.group("op")))
    out.append(("end", None))
    return out


def _and(a, b):
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def _or(a, b):
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def _null_safe(fn):
    def apply(a, b):
        return None if a is None or b is None else fn(a, b)

    return apply


def _divide(a, b):
    return None if b == 0 else a / b


def _modulo(a, b):
    if b == 0:
        return None
    result = abs(a) % abs(b)  # SQL's remainder keeps the dividend's sign
    return -result if a < 0 else result


_COMPARE = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide, "%": _modulo}


def _coalesce(*values):
    return next((v for v in values if v is not None), None)


def _skip_nulls(fn):
    def apply(*values):
        present = [v for v in values if v is not None]
        return fn(present) if present else None

    return apply


def _unary(fn):
    def apply(value):
        return None if value is None else fn(value)

    return apply


_FUNCTIONS: dict[str, Callable] = {
    "coalesce": _coalesce,
    "abs": _unary(abs),
    "greatest": _skip_nulls(max),
    "least": _skip_nulls(min),
    "lower": _unary(str.lower),
    "upper": _unary(str.upper),
}


class _Parser:
    def __init__(self, text: str, columns: frozenset[str]) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.columns = columns
        self.used: set[str] = set()

    def peek(self, kind: str, value: Any = None) -> bool:
        k, v = self.tokens[self.i]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: Any = None) -> Any:
        if not self.peek(kind, value):
            found = self.tokens[self.i][1]
            raise ConditionError(f"expected {value or kind}, found {found if found is not None else 'the end'}")
        self.i += 1
        return self.tokens[self.i - 1][1]

    def parse(self) -> Evaluator:
        fn = self.or_()
        self.take("end")
        return fn

    def or_(self) -> Evaluator:
        fn = self.and_()
        while self.peek("kw", "OR"):
            self.i += 1
            fn = _or_of(fn, self.and_())
        return fn

    def and_(self) -> Evaluator:
        fn = self.not_()
        while self.peek("kw", "AND"):
            self.i += 1
            fn = _and_of(fn, self.not_())
        return fn

    def not_(self) -> Evaluator:
        if self.peek("kw", "NOT"):
            self.i += 1
            inner = self.not_()
            return lambda row: (lambda v: None if v is None else not v)(_truth(inner(row)))
        return self.predicate()

    def predicate(self) -> Evaluator:
        left = self.additive()
        if self.peek("op") and self.tokens[self.i][1] in _COMPARE:
            compare = _null_safe(_COMPARE[self.take("op")])
            right = self.additive()
            return lambda row: compare(left(row), right(row))
        if self.peek("op", "<=>"):
            self.i += 1
            right = self.additive()
            return lambda row: (lambda a, b: (a is None and b is None) or (a is not None and b is not None and a == b))(
                left(row), right(row)
            )
        negate = False
        if (
            self.peek("kw", "NOT")
            and self.tokens[self.i + 1][0] == "kw"
            and self.tokens[self.i + 1][1] in ("IN", "BETWEEN")
        ):
            self.i += 1
            negate = True
        if self.peek("kw", "IN"):
            self.i += 1
            self.take("op", "(")
            items = [self.additive()]
            while self.peek("op", ","):
                self.i += 1
                items.append(self.additive())
            self.take("op", ")")
            return _maybe_not(lambda row: _in(left(row), [f(row) for f in items]), negate)
        if self.peek("kw", "BETWEEN"):
            self.i += 1
            low = self.additive()
            self.take("kw", "AND")
            high = self.additive()
            ge, le = _null_safe(operator.ge), _null_safe(operator.le)
            return _maybe_not(lambda row: _and(ge(left(row), low(row)), le(left(row), high(row))), negate)
        if self.peek("kw", "IS"):
            self.i += 1
            is_not = bool(self.peek("kw", "NOT")) and bool(self.take("kw", "NOT"))
            self.take("kw", "NULL")
            return (lambda row: left(row) is not None) if is_not else (lambda row: left(row) is None)
        return left

    def additive(self) -> Evaluator:
        fn = self.multiplicative()
        while self.peek("op") and self.tokens[self.i][1] in ("+", "-"):
            op = _null_safe(_ARITH[self.take("op")])
            fn = _binary(op, fn, self.multiplicative())
        return fn

    def multiplicative(self) -> Evaluator:
        fn = self.unary()
        while self.peek("op") and self.tokens[self.i][1] in ("*", "/", "%"):
            op = _null_safe(_ARITH[self.take("op")])
            fn = _binary(op, fn, self.unary())
        return fn

    def unary(self) -> Evaluator:
        if self.peek("op", "-"):
            self.i += 1
            inner = self.unary()
            return lambda row: (lambda v: None if v is None else -v)(inner(row))
        if self.peek("op", "+"):
            self.i += 1
            return self.unary()
        return self.primary()

    def primary(self) -> Evaluator:
        kind, value = self.tokens[self.i]
        if kind == "lit":
            self.i += 1
            return lambda row: value
        if kind == "kw" and value in ("TRUE", "FALSE", "NULL"):
            self.i += 1
            constant = {"TRUE": True, "FALSE": False, "NULL": None}[value]
            return lambda row: constant
        if kind == "op" and value == "(":
            self.i += 1
            inner = self.or_()
            self.take("op", ")")
            return inner
        if kind == "name":
            self.i += 1
            if self.peek("op", "("):
                fn = _FUNCTIONS.get(value.lower())
                if fn is None:
                    raise ConditionError(
                        f"function {value}() is not one the API evaluates ({', '.join(sorted(_FUNCTIONS))})"
                    )
                self.i += 1
                args: list[Evaluator] = []
                if not self.peek("op", ")"):
                    args.append(self.or_())
                    while self.peek("op", ","):
                        self.i += 1
                        args.append(self.or_())
                self.take("op", ")")
                return lambda row: fn(*(a(row) for a in args))
            if value not in self.columns:
                raise ConditionError(f"column {value} is not a transaction or feature column")
            self.used.add(value)
            return lambda row: row.get(value)
        raise ConditionError(f"unexpected {value if value is not None else 'end of condition'}")


def _truth(value) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ConditionError(f"{value!r} is not true/false")


def _in(value, items: list) -> bool | None:
    if value is None:
        return None
    if any(item is not None and item == value for item in items):
        return True
    return None if any(item is None for item in items) else False


def _or_of(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda row: _or(_truth(a(row)), _truth(b(row)))


def _and_of(a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda row: _and(_truth(a(row)), _truth(b(row)))


def _binary(op: Callable[[Any, Any], Any], a: Evaluator, b: Evaluator) -> Evaluator:
    return lambda row: op(a(row), b(row))


def _maybe_not(fn: Evaluator, negate: bool) -> Evaluator:
    if not negate:
        return fn
    return lambda row: (lambda v: None if v is None else not v)(fn(row))


def compile_condition(text: str, columns: Iterable[str]) -> Evaluator:
    """``text`` -> ``f(row) -> True | False | None`` over a dict of column values.

    >>> f = compile_condition("payer_count_5m >= 4 AND txn_type IN ('P2P', 'COLLECT')",
    ...                       ["payer_count_5m", "txn_type"])
    >>> f({"payer_count_5m": 5, "txn_type": "P2P"}), f({"payer_count_5m": 5, "txn_type": "P2M"})
    (True, False)
    >>> f({"payer_count_5m": None, "txn_type": "P2P"}) is None  # NULL, so the rule does not fire
    True
    >>> g = compile_condition("mcc IS NULL AND NOT (amount_paise * 2 < 10)", ["mcc", "amount_paise"])
    >>> g({"mcc": None, "amount_paise": 5})
    True
    >>> try:
    ...     compile_condition("reflect('java.lang.Runtime', 'exec')", ["mcc"])
    ... except ConditionError as exc:
    ...     print(exc)
    function reflect() is not one the API evaluates (abs, coalesce, greatest, least, lower, upper)
    """
    parser = _Parser(text, frozenset(columns))
    fn = parser.parse()

    def evaluate(row: Row) -> bool | None:
        return _truth(fn(row))

    return evaluate
