"""The API's rule conditions as generated Python functions answer exactly as the reference
evaluator (one closure per node) on any condition the grammar allows and any row: True,
False or NULL alike, and both raise where one does. The reference's own SQL semantics are
held to the stream's by tests/integration/test_api_parity.py."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txmon.infra.settings import DEFAULT_RULES
from txmon.models import rule_conditions
from txmon.models.features import FEATURES, INTEGER_FEATURES
from txmon.models.rule_conditions import (
    MAX_DEPTH,
    ConditionError,
    _generated,
    _parse,
    compile_condition,
    guarded_sql,
    interpret_condition,
)
from txmon.models.rules import load_rules
from txmon.spark_jobs.rules import RULE_COLUMNS, python_rules

COLUMNS = ("a", "b", "c", "txn_type", "mcc")
NUMBERS = st.one_of(
    st.none(),
    st.integers(-20, 20),
    st.sampled_from([2**63, -(2**70), 0, 1, 0.0, -0.0, 1.5, True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
)
# Text beside numbers: comparing them raises, in both. Text is never multiplied by a
# number here (Python would repeat it, possibly to gigabytes): the conditions with text
# have no `*`, the ones with `*` no text.
TEXT = st.one_of(st.sampled_from(["P2P", "COLLECT", "", "p2p"]), st.text(max_size=4))


def _string_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


NUMBER_LITERALS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["1e3", ".5", "2.", "TRUE", "FALSE", "NULL", "0", "1e400"]),
)
TEXT_LITERALS = st.one_of(
    st.text(max_size=5).map(_string_literal),
    st.sampled_from(["'P2P'", "'COLLECT'", "''", "'it''s'", "'); import os; ('"]),
)
OPERATORS = ["AND", "OR", "=", "==", "!=", "<>", "<", "<=", ">", ">=", "<=>", "+", "-", "/", "%"]


def _conditions(with_text: bool):
    literals = st.one_of(NUMBER_LITERALS, TEXT_LITERALS) if with_text else NUMBER_LITERALS
    atoms = st.one_of(st.sampled_from(COLUMNS), st.sampled_from([f"`{c}`" for c in COLUMNS]), literals)
    operators = OPERATORS if with_text else [*OPERATORS, "*"]

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(operators), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda x: f"(NOT ({x}))"),
            inner.map(lambda x: f"(-({x}))"),
            inner.map(lambda x: f"(+({x}))"),
            st.tuples(inner, st.booleans()).map(lambda t: f"({t[0]} IS {'NOT ' if t[1] else ''}NULL)"),
            st.tuples(inner, st.booleans(), st.lists(inner, min_size=1, max_size=4)).map(
                lambda t: f"({t[0]} {'NOT ' if t[1] else ''}IN ({', '.join(t[2])}))"
            ),
            st.tuples(inner, st.booleans(), inner, inner).map(
                lambda t: f"({t[0]} {'NOT ' if t[1] else ''}BETWEEN {t[2]} AND {t[3]})"
            ),
            st.tuples(st.sampled_from(["abs", "lower", "upper", "ABS"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.just("coalesce"), st.lists(inner, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            st.tuples(st.sampled_from(["greatest", "least"]), st.lists(inner, min_size=2, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
        )

    values = st.one_of(NUMBERS, TEXT) if with_text else NUMBERS
    rows = st.fixed_dictionaries(dict.fromkeys(COLUMNS, values))
    return st.tuples(st.recursive(atoms, extend, max_leaves=12), st.lists(rows, min_size=1, max_size=6))


def _outcome(fn, row):
    """What ``fn(row)`` gives: its value, or that it raised (the exception type may differ:
    the two evaluate the operands of a node in different orders, and either raises)."""
    try:
        return ("value", fn(row))
    except (ArithmeticError, TypeError, ValueError, ConditionError):  # what operators on odd values raise
        return ("raised", None)


def _same(x, y) -> bool:
    if x[0] != y[0]:
        return False
    a, b = x[1], y[1]
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_conditions(with_text=True), _conditions(with_text=False)))
def test_generated_condition_answers_as_the_reference_on_any_row(case):
    text, rows = case
    compiled, reference = compile_condition(text, COLUMNS), interpret_condition(text, COLUMNS)
    for row in rows:
        got, want = _outcome(compiled, row), _outcome(reference, row)
        assert _same(got, want), (text, row, got, want)
        if got[0] == "value":
            assert got[1] in (True, False, None)


GRID = (None, -1, 0, 1, 1.0, 2, 0.5, float("nan"), float("inf"), "P2P", "", True, False)


@pytest.mark.parametrize("op", [*OPERATORS, "*"])
def test_every_operator_answers_as_the_reference_on_a_grid(op):
    """Each operator on every pair of a grid with equal, smaller and larger values, NULLs
    and text (random conditions rarely meet two equal operands)."""
    for text in (f"a {op} b", f"a {op} 1", f"1 {op} b", f"a {op} NULL", f"NULL {op} b"):
        compiled, reference = compile_condition(text, COLUMNS), interpret_condition(text, COLUMNS)
        for x in GRID:
            for y in GRID:
                row = {"a": x, "b": y}
                assert _same(_outcome(compiled, row), _outcome(reference, row)), (text, row)


def test_conditions_are_generated_code_not_the_fallback():
    fn = compile_condition("a >= 4 AND txn_type IN ('P2P', 'COLLECT')", COLUMNS)
    assert fn.__code__.co_filename == "<rule condition>"
    assert fn({"a": 5, "txn_type": "P2P"}) is True
    assert fn({"a": None, "txn_type": "P2P"}) is None


def test_rule_text_never_becomes_code():
    """Literals and column names are passed to the generated function as values: a string
    written to look like Python stays a string."""
    hostile = '\'); __import__("os").system("false"); (\''
    fn = compile_condition(f"txn_type = {_string_literal(hostile)}", COLUMNS)
    assert fn({"txn_type": hostile}) is True
    assert fn({"txn_type": "P2P"}) is False
    assert hostile not in fn.__code__.co_consts


def test_nesting_deeper_than_python_compiles_falls_back_to_the_reference():
    text = "-(" * 98 + "a" + ")" * 98 + " > 1"  # deeper than Python's parser takes the generated source
    assert _generated(_parse(text, COLUMNS)) is None
    fn, reference = compile_condition(text, COLUMNS), interpret_condition(text, COLUMNS)
    for row in ({"a": 2}, {"a": 0}, {"a": None}):
        assert fn(row) is reference(row)


def _feature_value(name: str):
    if name in INTEGER_FEATURES:
        return st.one_of(st.integers(-1, 50), st.integers(0, 10**8))
    return st.one_of(st.floats(-10, 1e8, allow_nan=False), st.just(float("nan")), st.just(0.0))


FEATURE_ROWS = st.fixed_dictionaries(
    {
        **{name: _feature_value(name) for name in FEATURES},
        "txn_type": st.sampled_from(["P2P", "P2M", "COLLECT", "TRANSFER", "BILL"]),
        "channel": st.sampled_from(["UPI", "IMPS", "NEFT", "CARD_POS", "CARD_ECOM"]),
        "status": st.sampled_from(["SUCCESS", "FAILED"]),
        "mcc": st.one_of(st.none(), st.sampled_from(["5411", "6011", "7995"])),
    }
)


@pytest.fixture(scope="module")
def service_rules():
    return python_rules(load_rules(DEFAULT_RULES))


@settings(max_examples=300, deadline=None)
@given(FEATURE_ROWS)
def test_the_service_rules_fire_as_the_reference_decides(service_rules, row):
    assert service_rules.conditions, "the rules file has active rules"
    for rule, compiled in service_rules.conditions:
        assert compiled.__code__.co_filename == "<rule condition>", rule.id
        reference = interpret_condition(rule.effective_condition, RULE_COLUMNS)
        assert _same(_outcome(compiled, row), _outcome(reference, row)), (rule.id, row)


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 30) + "a > 1" + ")" * (MAX_DEPTH + 30),
        " AND ".join(["a > 1"] * 500),
        "NOT " * 2000 + "a > 1",
        "-(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1) + " > 1",
    ],
)
def test_a_condition_nested_deeper_than_the_limit_is_refused_not_a_recursion_error(text):
    """Evaluated recursively, such a condition would exhaust Python's stack on every row
    (the parser and the code generator already did, with a RecursionError out of loading)."""
    with pytest.raises(ConditionError, match=r"split it into several rules"):
        compile_condition(text, COLUMNS)


KINDS = {"a": "number", "b": "number", "c": "number", "txn_type": "text", "mcc": "text"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abs() > 0", r"abs\(\) takes 1 argument, not 0"),
        ("abs(1, 2) > 0", r"takes 1 argument, not 2"),
        ("lower('A', 'B') = 'a'", r"lower\(\) takes 1 argument"),
        ("greatest(a) > 1", r"at least 2 arguments, not 1"),
        ("lower(a) = 'x'", r"lower\(\) needs text, not number"),
        ("a > 'abc'", r"comparison > mixes number and text"),
        ("a BETWEEN 'a' AND 'z'", r"BETWEEN mixes number and text"),
        ("greatest(a, 'x') = 1", r"greatest\(\) mixes number and text"),
        ("txn_type % 2 = 0", r"arithmetic needs numbers, not text"),
        ("-txn_type > 0", r"arithmetic needs numbers, not text"),
        ("FALSE - 'P2P' = 1", r"arithmetic needs numbers, not bool"),
        ("a IN ('x', 1)", r"IN mixes number and text"),
        ("a + 1", r"is number, not true/false"),
        ("a AND TRUE", r"AND needs true/false operands, not number"),
        ("a > 1" + "9" * 5000, r"has 5,001 digits"),
        ("a > \u0661\u0660", r"cannot read"),  # Arabic-Indic ten: no number in Spark either
    ],
)
def test_a_condition_spark_and_python_would_read_differently_is_refused_naming_why(text, problem):
    """Each compiled before, then raised a TypeError (or ConditionError) on every row in
    the API and training, and would have Spark cast text to a number on every row (failing
    the stream's micro-batches in ANSI mode)."""
    with pytest.raises(ConditionError, match=problem):
        compile_condition(text, COLUMNS, KINDS)


def _typed_value(kind: str):
    return st.one_of(st.none(), NUMBERS if kind == "number" else TEXT)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_conditions(with_text=True), _conditions(with_text=False)), st.data())
def test_a_condition_its_kinds_accept_never_raises_on_a_row_of_those_kinds(case, data):
    """What the kinds check lets through evaluates on every row whose values are of their
    columns' kinds (NULL anywhere): True, False or NULL, never an exception, so a request
    or a training run cannot fail on a rule."""
    text, _ = case
    try:
        fn = compile_condition(text, COLUMNS, KINDS)
    except ConditionError:
        return
    rows = st.fixed_dictionaries({c: _typed_value(kind) for c, kind in KINDS.items()})
    for row in data.draw(st.lists(rows, min_size=1, max_size=6)):
        assert fn(row) in (True, False, None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_conditions(with_text=True), _conditions(with_text=False)))
def test_the_stream_s_guarded_text_means_the_condition_as_written(case):
    """guarded_sql rewrites only arithmetic, operand for operand: read back with its try_
    functions as the operators they stand for, it answers as the condition does on any
    row (so its spans never cut an operand or carry text across one)."""
    text, rows = case
    guarded = guarded_sql(text, COLUMNS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(rule_conditions._FUNCTIONS, "try_add", rule_conditions._null_safe(rule_conditions._ARITH["+"]))
        patch.setitem(
            rule_conditions._FUNCTIONS, "try_subtract", rule_conditions._null_safe(rule_conditions._ARITH["-"])
        )
        patch.setitem(
            rule_conditions._FUNCTIONS, "try_multiply", rule_conditions._null_safe(rule_conditions._ARITH["*"])
        )
        patch.setitem(rule_conditions._FUNCTIONS, "try_divide", rule_conditions._null_safe(rule_conditions._ARITH["/"]))
        patch.setitem(rule_conditions._FUNCTIONS, "try_mod", rule_conditions._null_safe(rule_conditions._ARITH["%"]))
        for name in ("try_add", "try_subtract", "try_multiply", "try_divide", "try_mod"):
            patch.setitem(rule_conditions._ARITY, name, (2, 2))
        nodes, stack = [], [rule_conditions._parse(guarded, COLUMNS)]
        while stack:
            nodes.append(stack.pop())
            stack.extend(rule_conditions._children(nodes[-1]))
        assert all(node[0] != "arith" for node in nodes)  # every operator became its try_ function
        read_back, reference = interpret_condition(guarded, COLUMNS), interpret_condition(text, COLUMNS)
        for row in rows:
            assert _same(_outcome(read_back, row), _outcome(reference, row))
