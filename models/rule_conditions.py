"""Rule conditions evaluated on one row in Python, with Spark SQL's semantics.

The rules file (config/rules.yaml, loaded by :mod:`txmon.models.rules`) writes each
condition as a Spark SQL expression, and the stream evaluates it with Spark. A synchronous
API cannot start a Spark job per request (hundreds of milliseconds), and training scores
pandas frames with no Spark session, so the same text is compiled here, once per rules
file, into one generated Python function per condition (a closure evaluator, one closure
per node, is kept as the reference it is tested against) for the part of Spark SQL rules
use:

- comparisons ``= == != <> < <= > >=``, ``AND OR NOT``, ``IN (...)``, ``NOT IN``,
  ``BETWEEN``, ``IS [NOT] NULL``, arithmetic ``+ - * / %``, parentheses;
- literals (integers, decimals, 'strings', TRUE, FALSE, NULL) and column names;
- ``coalesce``, ``abs``, ``greatest``, ``least``, ``lower``, ``upper``.

NULL follows SQL's three-valued logic as Spark does (a comparison with NULL is NULL,
``false AND NULL`` is false, ``x IN (..., NULL)`` without a match is NULL), and a rule
fires only when its condition is true (the stream's ``coalesce(condition, false)``).
Division by zero gives NULL, as in the stream, which evaluates every arithmetic operator
as Spark's ``try_`` function (:func:`guarded_sql`): in ANSI mode a plain ``/`` by zero
would fail the whole micro-batch.

Anything outside this subset is refused when the rules are loaded, naming the rule, so
neither the API nor training ever guesses at a rule it cannot evaluate exactly; the parity
tests (tests/integration/test_api_parity.py, tests/integration/test_backtest_parity.py) hold
its answers to the stream's.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from txmon.models.rules import RulesError

Row = dict
Evaluator = Callable[[Row], Any]

__all__ = ["ConditionError", "compile_condition", "condition_columns", "guarded_sql", "interpret_condition"]

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^'\\]|\\.|'')*')
    | (?P<name>[A-Za-z_][A-Za-z_0-9]*|`[^`]+`)
    | (?P<op><=>|<=|>=|<>|!=|==|[-+*/%=<>(),])
    )""",
    re.VERBOSE | re.ASCII,  # Spark reads only ASCII digits and spaces (an Arabic-Indic ten is no number there)
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "BETWEEN"}


class ConditionError(RulesError):
    """A condition uses Spark SQL the API cannot evaluate exactly."""


def _tokens(text: str, spans: list[tuple[int, int]] | None = None) -> list[tuple[str, Any]]:
    """The condition's tokens; ``spans`` (if given) gets each token's characters in
    ``text`` as (start, end), the end token's an empty span at the end."""
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ConditionError(f"cannot read {text[pos : pos + 20]!r}")
        pos = m.end()
        if spans is not None:
            spans.append((m.start(m.lastgroup or 0), pos))
        if m.group("number") is not None:
            raw = m.group("number")
            try:
                out.append(("lit", float(raw) if any(c in raw for c in ".eE") else int(raw)))
            except ValueError:  # Python's limit on the digits of an int it converts (4,300)
                raise ConditionError(
                    f"number {raw[:20]}... has {len(raw):,} digits; no column holds one that long"
                ) from None
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
    if spans is not None:
        spans.append((len(text), len(text)))
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


# How many arguments each function takes (Spark's own limits): a call outside them is
# refused when the rules load, not a TypeError on every row.
_ARITY = {"coalesce": (1, 1 << 30), "abs": (1, 1), "greatest": (2, 1 << 30), "least": (2, 1 << 30)}
_ARITY |= {"lower": (1, 1), "upper": (1, 1)}

MAX_DEPTH = 100
"""How deeply a condition may nest (operators inside operators). Python evaluates a parsed
condition recursively, so a deeper one (hundreds of ANDs, parentheses or NOTs, from a
generated or hostile rules file) would exhaust its stack on every row; no rule written
for people comes near it."""

# A parsed condition is a tree of tuples, ``(kind, ...)``:
#   ("lit", value)  ("col", name)  ("or", a, b)  ("and", a, b)  ("not", a)
#   ("cmp", op, a, b)  ("nseq", a, b)  ("in", a, items, negate)  ("between", a, low, high, negate)
#   ("isnull", a, is_not)  ("arith", op, a, b)  ("neg", a)  ("call", function name, args)
Node = tuple


class _Parser:
    def __init__(self, text: str, columns: frozenset[str]) -> None:
        self.spans: list[tuple[int, int]] = []
        self.tokens = _tokens(text, self.spans)
        # Each arithmetic node's operands as token ranges [first, after last), by id(node):
        # where its text lies in the condition (guarded_sql rewrites it).
        self.operands: dict[int, tuple[str, tuple[int, int], tuple[int, int]]] = {}
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

    def parse(self) -> Node:
        node = self.or_()
        self.take("end")
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.peek("kw", "OR"):
            self.i += 1
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek("kw", "AND"):
            self.i += 1
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.peek("kw", "NOT"):
            self.i += 1
            return ("not", self.not_())
        return self.predicate()

    def predicate(self) -> Node:
        left = self.additive()
        if self.peek("op") and self.tokens[self.i][1] in _COMPARE:
            op = self.take("op")
            return ("cmp", op, left, self.additive())
        if self.peek("op", "<=>"):
            self.i += 1
            return ("nseq", left, self.additive())
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
            return ("in", left, tuple(items), negate)
        if self.peek("kw", "BETWEEN"):
            self.i += 1
            low = self.additive()
            self.take("kw", "AND")
            return ("between", left, low, self.additive(), negate)
        if self.peek("kw", "IS"):
            self.i += 1
            is_not = bool(self.peek("kw", "NOT")) and bool(self.take("kw", "NOT"))
            self.take("kw", "NULL")
            return ("isnull", left, is_not)
        return left

    # additive and multiplicative are written out, not one helper: the parser recurses once
    # per parenthesis through these methods, and a frame fewer per level keeps a condition
    # of MAX_DEPTH parentheses within Python's recursion limit.
    def additive(self) -> Node:
        first = self.i
        node = self.multiplicative()
        while self.peek("op") and self.tokens[self.i][1] in ("+", "-"):
            left, op = (first, self.i), self.take("op")
            start = self.i
            node = ("arith", op, node, self.multiplicative())
            self.operands[id(node)] = (op, left, (start, self.i))
        return node

    def multiplicative(self) -> Node:
        first = self.i
        node = self.unary()
        while self.peek("op") and self.tokens[self.i][1] in ("*", "/", "%"):
            left, op = (first, self.i), self.take("op")
            start = self.i
            node = ("arith", op, node, self.unary())
            self.operands[id(node)] = (op, left, (start, self.i))
        return node

    def unary(self) -> Node:
        if self.peek("op", "-"):
            self.i += 1
            return ("neg", self.unary())
        if self.peek("op", "+"):
            self.i += 1
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.tokens[self.i]
        if kind == "lit":
            self.i += 1
            return ("lit", value)
        if kind == "kw" and value in ("TRUE", "FALSE", "NULL"):
            self.i += 1
            return ("lit", {"TRUE": True, "FALSE": False, "NULL": None}[value])
        if kind == "op" and value == "(":
            self.i += 1
            inner = self.or_()
            self.take("op", ")")
            return inner
        if kind == "name":
            self.i += 1
            if self.peek("op", "("):
                name = value.lower()
                if name not in _FUNCTIONS:
                    raise ConditionError(
                        f"function {value}() is not one the API evaluates ({', '.join(sorted(_FUNCTIONS))})"
                    )
                self.i += 1
                args: list[Node] = []
                if not self.peek("op", ")"):
                    args.append(self.or_())
                    while self.peek("op", ","):
                        self.i += 1
                        args.append(self.or_())
                self.take("op", ")")
                low, high = _ARITY[name]
                if not low <= len(args) <= high:
                    wanted = f"{low}" if low == high else f"at least {low}"
                    raise ConditionError(f"{name}() takes {wanted} argument{'s' * (low != 1)}, not {len(args)}")
                return ("call", name, tuple(args))
            if value not in self.columns:
                raise ConditionError(f"column {value} is not a transaction or feature column")
            self.used.add(value)
            return ("col", value)
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


def _null_safe_equal(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == b)


_GE, _LE = _null_safe(operator.ge), _null_safe(operator.le)


def _between(value, low, high) -> bool | None:
    return _and(_GE(value, low), _LE(value, high))


def _closure(node: Node) -> Evaluator:
    """The reference evaluator of a parsed condition: one closure per node, each the plain
    statement of its SQL semantics. Every operand is evaluated (no short cut), so whether
    an evaluation raises does not depend on the order."""
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda row: value
    if kind == "col":
        name = node[1]
        return lambda row: row.get(name)
    if kind == "or":
        return _or_of(_closure(node[1]), _closure(node[2]))
    if kind == "and":
        return _and_of(_closure(node[1]), _closure(node[2]))
    if kind == "not":
        inner = _closure(node[1])
        return lambda row: (lambda v: None if v is None else not v)(_truth(inner(row)))
    if kind == "cmp":
        compare = _null_safe(_COMPARE[node[1]])
        left, right = _closure(node[2]), _closure(node[3])
        return lambda row: compare(left(row), right(row))
    if kind == "nseq":
        left, right = _closure(node[1]), _closure(node[2])
        return lambda row: _null_safe_equal(left(row), right(row))
    if kind == "in":
        left, items = _closure(node[1]), [_closure(i) for i in node[2]]
        return _maybe_not(lambda row: _in(left(row), [f(row) for f in items]), node[3])
    if kind == "between":
        left, low, high = _closure(node[1]), _closure(node[2]), _closure(node[3])
        ge, le = _null_safe(operator.ge), _null_safe(operator.le)
        return _maybe_not(lambda row: _and(ge(left(row), low(row)), le(left(row), high(row))), node[4])
    if kind == "isnull":
        left = _closure(node[1])
        return (lambda row: left(row) is not None) if node[2] else (lambda row: left(row) is None)
    if kind == "arith":
        return _binary(_null_safe(_ARITH[node[1]]), _closure(node[2]), _closure(node[3]))
    if kind == "neg":
        inner = _closure(node[1])
        return lambda row: (lambda v: None if v is None else -v)(inner(row))
    if kind == "call":
        fn, args = _FUNCTIONS[node[1]], [_closure(a) for a in node[2]]
        return lambda row: fn(*(a(row) for a in args))
    raise AssertionError(f"unknown node {kind}")


# Nodes whose value is always True, False or None: _truth would return it unchanged.
_BOOLEAN = frozenset(("or", "and", "not", "in", "between", "isnull"))
# Nodes that can never raise: a test of one of them may skip evaluating the other operand.
_SAFE = frozenset(("lit", "col"))


class _Generator:
    """A parsed condition as one Python function, with the same results as :func:`_closure`
    but without its closure call per node (the rules ran a dozen Python calls per condition,
    and every rule is evaluated on every scored request). Every value the condition holds
    (literals, column names) is passed in as a default argument, never written into the
    source, so no text from the rules file becomes code; the source holds only operators
    and generated names."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.temps = 0

    def const(self, value: Any) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def truth(self, node: Node) -> str:
        """``_truth`` of the node's value, with the usual True/False/None answered inline."""
        code = self.expr(node)
        if node[0] in _BOOLEAN or (node[0] == "lit" and (node[1] is None or isinstance(node[1], bool))):
            return code
        t = self.temp()
        return f"({t} if ({t} := {code}) is None or {t} is True or {t} is False else _truth({t}))"

    def null_safe(self, a: Node, b: Node, apply: str) -> str:
        """``apply`` (an expression of ``{a}`` and ``{b}``) unless either operand is NULL,
        both operands evaluated first unless the second cannot raise."""
        ta, tb = self.temp(), self.temp()
        ca, cb = self.expr(a), self.expr(b)
        if b[0] == "lit":
            if b[1] is None:
                return f"(({ta} := {ca}), None)[1]"
            return f"(None if ({ta} := {ca}) is None else {apply.format(a=ta, b=cb)})"
        either = (
            f"({ta} := {ca}) is None or ({tb} := {cb}) is None"
            if b[0] in _SAFE
            else f"(({ta} := {ca}) is None) | (({tb} := {cb}) is None)"
        )
        return f"(None if {either} else {apply.format(a=ta, b=tb)})"

    def expr(self, node: Node) -> str:
        kind = node[0]
        if kind == "lit":
            return self.const(node[1])
        if kind == "col":
            return f"_get({self.const(node[1])})"
        if kind == "or":
            return f"_or({self.truth(node[1])}, {self.truth(node[2])})"
        if kind == "and":
            return f"_and({self.truth(node[1])}, {self.truth(node[2])})"
        if kind == "not":
            t = self.temp()
            return f"(None if ({t} := {self.truth(node[1])}) is None else not {t})"
        if kind == "cmp":
            return self.null_safe(node[2], node[3], f"{{a}} {_PY_COMPARE[node[1]]} {{b}}")
        if kind == "nseq":
            return f"_null_safe_equal({self.expr(node[1])}, {self.expr(node[2])})"
        if kind == "in":
            left, items = node[1], node[2]
            if all(i[0] == "lit" and i[1] is not None for i in items):
                # Only literals, none NULL: a tuple's `in` (identity, then ==) answers as
                # _in's `==` does, since no row value is one of these parsed objects.
                t, values = self.temp(), self.const(tuple(i[1] for i in items))
                code = f"(None if ({t} := {self.expr(left)}) is None else {t} in {values})"
            else:
                code = f"_in({self.expr(left)}, [{', '.join(self.expr(i) for i in items)}])"
        elif kind == "between":
            code = f"_between({self.expr(node[1])}, {self.expr(node[2])}, {self.expr(node[3])})"
        elif kind == "isnull":
            return f"({self.expr(node[1])} is {'not ' if node[2] else ''}None)"
        elif kind == "arith":
            op = node[1]
            apply = f"{{a}} {op} {{b}}" if op in "+-*" else f"{'_divide' if op == '/' else '_modulo'}({{a}}, {{b}})"
            return self.null_safe(node[2], node[3], apply)
        elif kind == "neg":
            t = self.temp()
            return f"(None if ({t} := {self.expr(node[1])}) is None else -{t})"
        elif kind == "call":
            return f"{self.const(_FUNCTIONS[node[1]])}({', '.join(self.expr(a) for a in node[2])})"
        else:
            raise AssertionError(f"unknown node {kind}")
        if node[-1]:  # NOT IN, NOT BETWEEN
            t = self.temp()
            return f"(None if ({t} := {code}) is None else not {t})"
        return code


_PY_COMPARE = {"=": "==", "==": "==", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_HELPERS = {
    "_and": _and,
    "_or": _or,
    "_truth": _truth,
    "_in": _in,
    "_between": _between,
    "_null_safe_equal": _null_safe_equal,
    "_divide": _divide,
    "_modulo": _modulo,
}


def _generated(node: Node) -> Evaluator | None:
    """The condition as one generated function, or None if Python will not compile it
    (nesting deeper than its parser allows): the closures then evaluate it."""
    gen = _Generator()
    try:
        body = gen.truth(node)
    except RecursionError:  # the generator descends a few frames per level
        return None
    params = "".join(f", {name}={name}" for name in gen.constants)
    source = f"def condition(row{params}):\n    _get = row.get\n    return {body}\n"
    namespace = dict(_HELPERS, **gen.constants)
    try:
        exec(compile(source, "<rule condition>", "exec"), namespace)  # the source holds no rule text (see _Generator)
    except (SyntaxError, RecursionError, MemoryError):
        return None
    return namespace["condition"]


def _children(node: Node) -> list[Node]:
    kind = node[0]
    if kind in ("lit", "col"):
        return []
    if kind in ("cmp", "arith"):
        return [node[2], node[3]]
    if kind == "in":
        return [node[1], *node[2]]
    if kind == "between":
        return [node[1], node[2], node[3]]
    if kind == "isnull":
        return [node[1]]
    if kind == "call":
        return list(node[2])
    return list(node[1:])  # or, and, not, nseq, neg


def _depth(node: Node) -> int:
    """How deeply ``node`` nests, counted without recursion (it may be very deep)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in _children(current))
    return deepest


def _parsed(text: str, columns: Iterable[str]) -> tuple[_Parser, Node]:
    """The parser after reading ``text`` (its tokens' spans, its arithmetic's operands) and
    the condition it read, no deeper than MAX_DEPTH."""
    parser = _Parser(text, frozenset(columns))
    try:
        node = parser.parse()
    except RecursionError:  # the parser descends once per parenthesis
        raise ConditionError(f"nested more than {MAX_DEPTH} levels deep; split it into several rules") from None
    depth = _depth(node)
    if depth > MAX_DEPTH:
        raise ConditionError(f"nested {depth} levels deep, more than {MAX_DEPTH}; split it into several rules")
    return parser, node


def _parse(text: str, columns: Iterable[str], kinds: Mapping[str, str] | None = None) -> Node:
    _, node = _parsed(text, columns)
    if kinds is not None:
        kind = _kind(node, kinds)
        if kind not in _TRUTHY:
            raise ConditionError(f"is {kind}, not true/false; compare it with something (e.g. `>= 3`)")
    return node


# The kinds of value a condition computes: "number", "text", "bool", "time", "null" (the
# NULL literal) and "any" (a column of unknown type). Spark casts between kinds where
# Python cannot (text to number, text to time), and in ANSI mode fails the whole
# micro-batch when such a cast fails on a row; so a condition mixing kinds is refused
# when the rules load, before the stream or the API ever evaluates it.
_TRUTHY = frozenset(("bool", "null", "any"))
_NUMERIC = frozenset(("number", "null", "any"))


def _common(kinds: list[str], what: str) -> str:
    known = {k for k in kinds if k not in ("null", "any")}
    if len(known) > 1:
        raise ConditionError(f"{what} mixes {' and '.join(sorted(known))}; Python and Spark would disagree on it")
    return known.pop() if known else ("any" if "any" in kinds else "null")


def _operands_of(node: Node, kinds: Mapping[str, str], allowed: frozenset[str], needs: str) -> None:
    for child in _children(node):
        found = _kind(child, kinds)
        if found not in allowed:
            raise ConditionError(f"{needs}, not {found}")


def _kind(node: Node, kinds: Mapping[str, str]) -> str:
    """The kind of ``node``'s value; ConditionError where kinds do not fit the operator."""
    kind = node[0]
    if kind == "lit":
        value = node[1]
        if value is None:
            return "null"
        return "bool" if isinstance(value, bool) else "text" if isinstance(value, str) else "number"
    if kind == "col":
        return kinds.get(node[1], "any")
    if kind in ("or", "and", "not"):
        _operands_of(node, kinds, _TRUTHY, f"{kind.upper()} needs true/false operands")
        return "bool"
    if kind == "cmp":
        _common([_kind(node[2], kinds), _kind(node[3], kinds)], f"comparison {node[1]}")
        return "bool"
    if kind in ("nseq", "in", "between"):
        _common([_kind(child, kinds) for child in _children(node)], kind.upper() if kind != "nseq" else "<=>")
        return "bool"
    if kind == "isnull":
        _kind(node[1], kinds)
        return "bool"
    if kind in ("arith", "neg"):
        _operands_of(node, kinds, _NUMERIC, "arithmetic needs numbers")
        return "number"
    if kind == "call":
        name, args = node[1], [_kind(a, kinds) for a in node[2]]
        if name == "abs" and args[0] not in _NUMERIC:
            raise ConditionError(f"abs() needs a number, not {args[0]}")
        if name in ("lower", "upper"):
            if args[0] not in ("text", "null", "any"):
                raise ConditionError(f"{name}() needs text, not {args[0]}")
            return "text"
        return _common(args, f"{name}()") if name != "abs" else "number"
    raise AssertionError(f"unknown node {kind}")


def condition_columns(text: str, columns: Iterable[str]) -> frozenset[str]:
    """The columns ``text`` reads (ConditionError as :func:`compile_condition`).

    >>> sorted(condition_columns("coalesce(mcc, 'x') = 'x' AND amount_paise > 5", ["mcc", "amount_paise", "city"]))
    ['amount_paise', 'mcc']
    """
    parser = _Parser(text, frozenset(columns))
    parser.parse()
    return frozenset(parser.used)


def interpret_condition(text: str, columns: Iterable[str]) -> Evaluator:
    """:func:`compile_condition` by walking the parsed condition one closure per node: the
    reference the generated functions are held to (tests/unit/test_api_conditions.py)."""
    fn = _closure(_parse(text, columns))

    def evaluate(row: Row) -> bool | None:
        return _truth(fn(row))

    return evaluate


def compile_condition(text: str, columns: Iterable[str], kinds: Mapping[str, str] | None = None) -> Evaluator:
    """``text`` -> ``f(row) -> True | False | None`` over a dict of column values.

    ``kinds``: column -> kind ("number", "text", "bool", "time"): with it, a condition
    whose operands' kinds do not fit its operators (``amount_paise > 'abc'``,
    ``lower(amount_paise)``, ``txn_type % 2``), or that is not true/false, is refused here
    instead of raising on every row (and failing the stream's micro-batches in Spark).

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
    node = _parse(text, columns, kinds)
    return _generated(node) or interpret_condition(text, columns)


_TRY = {"+": "try_add", "-": "try_subtract", "*": "try_multiply", "/": "try_divide", "%": "try_mod"}


def guarded_sql(text: str, columns: Iterable[str]) -> str:
    """``text`` as the stream gives it to Spark: every arithmetic operator written as Spark's
    ``try_`` function (``a / b`` -> ``try_divide(a, b)``), everything else as written.

    In ANSI mode (Spark's default) a division by zero or an overflow on one row fails the
    whole micro-batch, and a stream that restarts into the same rows fails again: one rule
    such as ``payer_count_5m / payer_count_1h > 0.5`` would stop it for good. The ``try_``
    functions give NULL instead (the rule then does not fire), which is what this module's
    Python evaluation gives for a zero divisor; an overflow (beyond 9.2e18) stays a
    difference: Python's integers do not overflow.

    >>> guarded_sql("a / (b - 1) > 0.5 AND mcc IN ('5411')", ["a", "b", "mcc"])
    "try_divide(a, (try_subtract(b, 1))) > 0.5 AND mcc IN ('5411')"
    """
    parser, _ = _parsed(text, columns)
    spans, source = parser.spans, text.rstrip()
    # Every arithmetic node as (start char, end char, function, left chars, right chars).
    rewrites = []
    for op, left, right in parser.operands.values():
        chars = [(spans[a][0], spans[b - 1][1]) for a, b in (left, right)]
        rewrites.append((chars[0][0], chars[1][1], _TRY[op], chars[0], chars[1]))
    rewrites.sort(key=lambda r: (r[0], -r[1]))

    def render(lo: int, hi: int) -> str:
        out, pos = [], lo
        for start, end, function, left, right in rewrites:
            if start < pos or end > hi or start < lo:
                continue  # outside this range, or inside one already rewritten
            out += [source[pos:start], f"{function}({render(*left)}, {render(*right)})"]
            pos = end
        out.append(source[pos:hi])
        return "".join(out)

    return render(0, len(source))
