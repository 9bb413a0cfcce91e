"""Replay mode: a bank's historical CSV or Parquet file, streamed into Kafka in event-time order.

A small YAML mapping (see ``config/replay/*.yaml``) says how the file's columns become
events of the contract in :mod:`ingestion.events`. Every row is mapped to a raw event
dict and checked with :func:`~ingestion.events.check_event` (the rules of
``validate_event``); valid events are sorted by event time (stable) and sent, optionally
paced. A row that cannot be mapped or breaks the contract goes to the rejects file with
its row number, reason code, every problem it has (each naming the expected format) and
its label, and is counted in the summary: nothing is dropped silently.

Mapping file::

    source:                      # optional
      format: csv                # csv | parquet; default: from the file suffix
      delimiter: ","             # csv only
      encoding: utf-8            # csv only: the text's encoding, e.g. cp1252 or latin-1 for older exports
    fields:                      # contract target (dotted path) -> spec
      txn_id:       {column: trans_num}
      event_time:   {column: ts, format: "%Y-%m-%d %H:%M:%S", timezone: Asia/Kolkata}
      amount_paise: {column: amt, unit: rupees, round: half_even}
      payer.account_number: {column: acct, pattern: "^[A-Z](\\d+)$"}
      channel:      {value: UPI}
      device_id:    {absent: true}   # the source has no such field
      ...
    label:                       # optional ground truth, for evaluation
      is_fraud: {column: is_fraud}
      scenario: {value: historical}
      delay: P1D                 # label_time = event_time + delay (0 to P3650D; default 1 day, as the simulator)

A spec is ``{value: CONSTANT}``, ``{column: NAME, ...}`` or ``{absent: true}``. ``absent``
declares that the source has no such field (typically ``device_id``, ``mcc``, ``ip``,
``geo.*`` in card or core-banking files): the event leaves it out and the models treat
it as missing. Only optional targets can be absent; leaving a target out of the mapping
means the same, ``absent`` says so on purpose for the next reader.

A column's cell goes through these optional steps, in order:

1. ``pattern``: a regex searched in the cell text; keeps group 1 (the whole match if
   the pattern has no group). The one general extraction mechanism.
2. ``map``: replaces the text by the map's value (keys compare as text; quote them).
3. ``template``: ``str.format`` with ``{value}`` (the text) and ``{slug}`` (see
   :func:`slug`), e.g. ``"{slug}@okaxis"`` or ``"{value:0>12}"``: numeric ids such as
   customer ``7`` become account numbers (``000000000007``) this way. Both are text, so
   pad with ``0>12``, not ``012d``. A whole number read as float or decimal (Parquet, an
   id column with gaps) is the integer's text: ``12.0`` gives ``12``. A CSV cell is kept
   as written: strip a written ``12.0`` with ``pattern: "^(\\d+)(?:\\.0+)?$"``.
4. conversion for the target: ``amount_paise`` needs ``unit: rupees|paise`` (exact,
   via Decimal from the text, never float) and refuses fractions of a paisa unless
   ``round: half_even|half_up|down`` says how to round them (once, in Decimal, from the
   written value, so a float written as ``851.9499999999999`` becomes 85195 paise);
   ``event_time`` is ISO-8601, or
   ``format`` (strptime) with ``timezone`` (IANA name) for naive times, or a number
   of ``unit: seconds|milliseconds|minutes|hours|days`` after ``origin`` (default
   the Unix epoch); ``geo.lat``/``geo.lon`` become floats; everything else text.

``default`` is the target value used when the column gives none: an empty cell, no
``pattern`` match, or a text missing from ``map``. It skips steps 1-3 but not step 4.
Without a default an empty cell leaves the field out (the contract then decides) and a
pattern or map miss rejects the row (``unmapped_value``); ``default: null`` leaves the
field out in every case.

Not mapped: ``schema_version`` (always the current one), ``currency`` (``INR`` unless
mapped) and ``txn_id``, which is then ``uuid5(REPLAY_TXN_NAMESPACE, "<file name>:<row>")``:
the same file replayed twice gives the same ids, so downstream upserts stay idempotent.
Row numbers count data rows from 1 (a CSV's header is row 0; blank lines are not rows).
A Parquet file's columns are all it holds, under its own names (a column pandas wrote
as the frame's index included); a name repeated in a header or a schema is read as
``name.1``, ``name.2``, ... after the first. A CSV record whose cells do not line up
with the header's columns (an unquoted delimiter in a cell, a quote never closed, a line
cut off) is a row too: a ``malformed_row`` reject naming its lines, its cells as read in
the rejects file, and every other row keeps its cells and its number.

Rejection reasons: the contract's :class:`~ingestion.events.DeadLetterReason` values,
plus :class:`ReplayRejectReason` for rows that never became an event. A row's reason is
its first problem (mapping problems before contract problems); its detail lists them
all, e.g. ``amount_paise: 12.345 rupees is not a whole number of paise; ... | 1 more:
[invalid_field] payer.account_number: '12345' is not 9-18 digits, e.g. 123456789012``.

Limits: the file is read a chunk at a time, and every valid event is held until the
file is sorted, compactly (its contract JSON, event time, row number and label: some
hundreds of bytes a row) and rebuilt as it is sent; rejects are written from a second
read of the file. About 90 us of CPU per row, so a million rows take a minute and a
half before the first event leaves. Duplicate ``txn_id`` values in the source are not
detected here.
"""

from __future__ import annotations

import array
import codecs
import csv
import difflib
import json
import math
import re
import string
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from inspect import signature
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from txmon.infra.errors import ConfigError, YamlError
from txmon.infra.yaml_loading import WrittenModel, load_yaml
from txmon.ingestion.events import (
    FIELD_ENUMS,
    FIELD_PATTERNS,
    PARTY_ID_FIELDS,
    SCHEMA_VERSION,
    AmountRounding,
    DeadLetterReason,
    Problem,
    TransactionEvent,
    check_event,
    describe_problems,
    rupees_to_paise,
    to_json,
    validate_event,
    whole_paise,
)
from txmon.ingestion.labels import LabelReleaser
from txmon.ingestion.simulator import Label

__all__ = [
    "MAX_LABEL_DELAY",
    "REJECTS_COLUMNS",
    "REJECT_REASONS",
    "REPLAY_TXN_NAMESPACE",
    "FieldSpec",
    "LabelSpec",
    "RejectedRow",
    "ReplayMapping",
    "ReplayMappingError",
    "ReplayPacer",
    "ReplayRejectReason",
    "ReplaySummary",
    "SourceSpec",
    "conflicting_duplicate",
    "due_offset",
    "known_zone",
    "load_labelled",
    "load_mapping",
    "parse_mapping",
    "read_source",
    "replay_file",
    "slug",
    "source_chunks",
]


class ReplayMappingError(ConfigError):
    """The replay mapping file is invalid, or does not fit the file being replayed."""


class ReplayRejectReason(StrEnum):
    """Why a source row never became an event (beyond the contract's own reasons)."""

    UNMAPPED_VALUE = "unmapped_value"
    """The cell does not match the spec's ``pattern``, or is missing from its ``map``,
    and the spec has no ``default``."""
    UNPARSABLE_VALUE = "unparsable_value"
    """The cell is not a number, time or true/false where the target needs one."""
    FRACTIONAL_PAISE = "fractional_paise"
    """An amount that is not a whole number of paise (e.g. 12.345 rupees)."""
    MALFORMED_ROW = "malformed_row"
    """A CSV record whose cells do not line up with the header (more or fewer than its
    columns, or one the CSV reader cannot split): none of its cells is read."""


REJECT_REASONS: tuple[str, ...] = (*(r.value for r in ReplayRejectReason), *(r.value for r in DeadLetterReason))

REPLAY_TXN_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "txmon:replay:txn_id")
"""Namespace of the txn ids generated for files whose mapping has no ``txn_id``."""

# validate_event's own default, so the check after shift_to agrees with the contract.
_MAX_FUTURE_SKEW: timedelta = signature(validate_event).parameters["max_future_skew"].default
_NO_FUTURE_CHECK = datetime(9000, 1, 1, tzinfo=UTC)
_MIN_SLEEP_S = 0.001
_CHUNK_ROWS = 10_000
"""Rows replay maps at a time: their event objects (some KB each) live only while their
chunk is mapped, so the chunk sets the memory replay needs beyond the held events."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# ------------------------------------------------------------------------ mapping


def known_zone(name: str) -> str:
    """``name`` when it is an IANA time zone; else ValueError naming the fix. For every
    zone a user writes (a mapping's ``timezone``, ``txmon backtest --tz``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}'; use an IANA name such as UTC or Asia/Kolkata") from None
    return name


MAX_LABEL_DELAY = timedelta(days=3650)
"""The longest label delay a mapping or ``txmon backtest --label-delay`` takes: a label
time must stay a date (event time plus 10**8 days overflowed it and stopped the file)."""
_AMOUNT_UNITS = ("rupees", "paise")
_AMOUNT_DIGITS = 24
"""Digits before the point beyond which a cell cannot be an amount in any unit (the
contract's cap, MAX_AMOUNT_PAISE, has 12 in paise): rejected as absurd before conversion."""
_TIME_UNITS: dict[str, int | Decimal] = {
    "seconds": 1,
    "milliseconds": Decimal("0.001"),
    "minutes": 60,
    "hours": 3600,
    "days": 86400,
}
_TEMPLATE_NAMES = ("value", "slug")
_COLUMN_ONLY = ("pattern", "map", "default", "template", "unit", "round", "format", "timezone", "origin")
_SPEC_KINDS = ("column", "value", "absent")


def _scalar(value: Any) -> str | int | float | bool:
    if isinstance(value, (str, int, float, bool)):
        return value
    raise PydanticCustomError(
        "scalar", "must be text, a number or true/false, got {kind}", {"kind": type(value).__name__}
    )


Scalar = Annotated[str | int | float | bool, PlainValidator(_scalar)]


def _key_text(key: Any) -> str:
    """Map keys compare as cell text: YAML's ``1:`` and ``true:`` become "1" and "true"."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class _Strict(WrittenModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Strict):
    """Where one target's value comes from: ``{column: NAME, ...}``, ``{value: CONSTANT}``, or
    ``{absent: true}`` (the source has no such field)."""

    column: str | None = Field(None, min_length=1)
    value: Scalar | None = None
    absent: Literal[True] | None = None
    pattern: str | None = None
    map: dict[str, Scalar] | None = None
    default: Scalar | None = None
    template: str | None = None
    unit: str | None = None  # checked per target: amounts and event_time take different units
    round: AmountRounding | None = None
    format: str | None = None
    timezone: str | None = None
    origin: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError(
                "spec", "a field spec is a mapping: {column: NAME, ...}, {value: CONSTANT} or {absent: true}"
            )
        kinds = [k for k in _SPEC_KINDS if k in data]
        if len(kinds) != 1:
            raise PydanticCustomError(
                "spec",
                "needs exactly one of `column: NAME` (read from the file), `value: CONSTANT` "
                "(the same for every row) or `absent: true` (the source has no such field); got keys {keys}",
                {"keys": ", ".join(map(str, data)) or "none"},
            )
        if "absent" in data:
            if data["absent"] is not True:
                raise PydanticCustomError(
                    "spec", "absent takes only `true`; to read the field, give `column:` or `value:` instead"
                )
            if len(data) > 1:
                raise PydanticCustomError(
                    "spec",
                    "an absent field takes no other keys, got {keys}",
                    {"keys": ", ".join(str(k) for k in data if k != "absent")},
                )
        if "value" in data:
            if data["value"] is None:
                raise PydanticCustomError("spec", "`value: null` sets nothing; remove the field instead")
            others = [str(k) for k in data if k != "value" and k in _COLUMN_ONLY]
            if others:
                raise PydanticCustomError(
                    "spec",
                    "a constant takes no {keys}; those apply to `column:` specs",
                    {"keys": ", ".join(others)},
                )
        if isinstance(data.get("map"), dict):
            data = {**data, "map": {_key_text(k): v for k, v in data["map"].items()}}
        return data

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise PydanticCustomError(
                    "pattern",
                    "'{pattern}' is not a valid regex ({error})",
                    {"pattern": value, "error": str(exc)},
                ) from None
        return value

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise PydanticCustomError(
                "template", "{error}; write a literal brace as {{ or }}", {"error": str(exc)}
            ) from None
        unknown = names - set(_TEMPLATE_NAMES)
        if unknown or not names:
            raise PydanticCustomError(
                "template",
                "placeholders must be {value} or {slug}, got {found}",
                {"found": ", ".join(sorted(unknown)) or "none"},
            )
        try:  # format specs depend on the type, never on the text: one try checks them all
            value.format(value="1", slug="1")
        except (ValueError, IndexError, KeyError) as exc:
            raise PydanticCustomError(
                "template",
                "{error}: the value and slug are text, so pad with {good}, not {bad}",
                {"error": str(exc), "good": "{value:0>12}", "bad": "{value:012d}"},
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                known_zone(value)
            except ValueError as exc:
                raise PydanticCustomError("timezone", "{problem}", {"problem": str(exc)}) from None
        return value

    @property
    def has_default(self) -> bool:
        """True when ``default`` was written in the file (``default: null`` counts)."""
        return "default" in self.model_fields_set


class SourceSpec(_Strict):
    """How to read the file."""

    format: Literal["csv", "parquet"] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    """A CSV's text encoding (any name Python knows: utf-8, utf-8-sig, cp1252, latin-1, ...)."""

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise PydanticCustomError(
                "encoding",
                "'{value}' is not a text encoding Python knows; e.g. utf-8, cp1252, latin-1",
                {"value": value},
            ) from None
        return value


class LabelSpec(_Strict):
    """Ground truth columns. ``scenario`` is kept for fraud rows only, as the simulator does."""

    is_fraud: FieldSpec
    scenario: FieldSpec | None = None
    delay: timedelta = timedelta(days=1)

    @field_validator("delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise PydanticCustomError("delay", "delay must be >= 0, e.g. P1D or 0")
        if value > MAX_LABEL_DELAY:
            raise PydanticCustomError("delay", "delay must be at most P3650D (ten years), e.g. P7D")
        return value


class ReplayMapping(_Strict):
    """A whole mapping file. Build it with :func:`load_mapping` or :func:`parse_mapping`."""

    source: SourceSpec = SourceSpec()
    fields: dict[str, FieldSpec]
    label: LabelSpec | None = None

    @model_validator(mode="after")
    def _fits_contract(self) -> ReplayMapping:
        problems = _contract_problems(self)
        if problems:
            raise PydanticCustomError("mapping", "{problems}", {"problems": "; ".join(problems)})
        return self

    def columns(self) -> list[str]:
        """Source columns the mapping reads, in first-use order."""
        specs = [*self.fields.values()]
        if self.label is not None:
            specs += [s for s in (self.label.is_fraud, self.label.scenario) if s is not None]
        return list(dict.fromkeys(s.column for s in specs if s.column is not None))


# ---------------------------------------------------------- contract targets


@dataclass(frozen=True)
class _Target:
    path: str
    kind: str  # "time" | "amount" | "float" | "text"
    required: bool  # whenever its enclosing object is present
    parent: str  # "" for top-level fields


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        else:
            return annotation


def _contract_targets(model: type[BaseModel] = TransactionEvent, parent: str = "") -> Iterator[_Target]:
    for name, info in model.model_fields.items():
        base = _unwrap(info.annotation)
        path = f"{parent}.{name}" if parent else name
        if isinstance(base, type) and issubclass(base, BaseModel):
            yield from _contract_targets(base, path)
            continue
        if path == "schema_version":
            continue  # written by txmon, never mapped
        kind = {"event_time": "time", "amount_paise": "amount"}.get(path)
        kind = kind or ("float" if base is float else "text")
        yield _Target(path, kind, info.is_required(), parent)


TARGETS: dict[str, _Target] = {t.path: t for t in _contract_targets()}
_PARTIES = ("payer", "payee")
_NOT_REQUIRED_IN_MAPPING = ("txn_id", "currency")  # generated / defaulted


def _spec_problems(where: str, spec: FieldSpec, target: _Target | None) -> list[str]:
    """Target-specific checks of one spec (``target`` None: a label spec)."""
    problems: list[str] = []
    kind = target.kind if target else "text"
    if spec.absent:
        if target is None:
            return [f"{where}: a label cannot be absent; leave the key out instead"]
        if target.required:
            return [f"{where}: cannot be absent, the event contract requires it; map it to a column or a constant"]
        return []
    used = [k for k in ("unit", "format", "timezone", "origin") if getattr(spec, k) is not None]
    if spec.round is not None and kind != "amount":
        problems.append(f"{where}.round: only amount_paise takes round")
    if kind == "amount":
        if spec.unit not in (None, *_AMOUNT_UNITS):
            problems.append(f"{where}.unit: amounts take unit rupees or paise, not {spec.unit}")
        if spec.column is not None and spec.unit is None:
            problems.append(f"{where}: say what the column holds: unit: rupees or unit: paise")
        if spec.value is not None and (type(spec.value) is not int):
            problems.append(f"{where}.value: a constant amount is a whole number of paise")
        problems += [f"{where}.{k}: only event_time takes {k}" for k in used if k != "unit"]
    elif kind == "time":
        if spec.unit is not None and spec.unit not in _TIME_UNITS:
            problems.append(f"{where}.unit: event_time offsets take unit {'|'.join(_TIME_UNITS)}, not {spec.unit}")
        if spec.unit is not None and (spec.format or spec.timezone):
            problems.append(
                f"{where}: unit (a number after origin) excludes format and timezone; "
                "put the offset in origin, e.g. 2025-01-01T00:00:00+05:30"
            )
        if spec.origin is not None and spec.unit is None:
            problems.append(f"{where}.origin: needs unit, e.g. unit: hours")
        if spec.format and "%z" not in spec.format and "%Z" not in spec.format and not spec.timezone:
            problems.append(
                f"{where}: times read with format {spec.format!r} have no UTC offset; "
                "add timezone: UTC (or the zone the file was written in)"
            )
    else:
        problems += [
            f"{where}.{k}: only {'amount_paise and event_time take' if k == 'unit' else 'event_time takes'} {k}"
            for k in used
        ]
    path = target.path if target else None
    finals = [] if spec.value is None else [spec.value]
    if spec.default is not None:
        finals.append(spec.default)
    if spec.map and spec.template is None:
        finals += list(spec.map.values())
    if path in FIELD_ENUMS:
        allowed = FIELD_ENUMS[path]
        bad = sorted({str(v) for v in finals} - set(allowed))
        if bad:
            problems.append(f"{where}: {', '.join(bad)} not allowed; choose from {', '.join(allowed)}")
    elif path in FIELD_PATTERNS:
        bad = sorted({_key_text(v) for v in finals if not re.search(FIELD_PATTERNS[path], _key_text(v))})
        if bad:
            problems.append(f"{where}: {', '.join(map(repr, bad))} breaks the contract format FIELD_PATTERNS[{path!r}]")
    return problems


def _contract_problems(mapping: ReplayMapping) -> list[str]:
    problems: list[str] = []
    suggested: set[str] = set()
    for name, spec in mapping.fields.items():
        target = TARGETS.get(name)
        if target is None:
            close = difflib.get_close_matches(name, TARGETS, n=1)
            suggested.update(close)
            hint = f"did you mean {close[0]}? " if close else ""
            why = "is written by txmon" if name == "schema_version" else "is not in the event contract"
            problems.append(f"fields.{name}: {why}; {hint}valid targets: {', '.join(TARGETS)}")
            continue
        problems += _spec_problems(f"fields.{name}", spec, target)
    mapped = set(mapping.fields)
    read = {name for name, spec in mapping.fields.items() if not spec.absent}
    present_objects = {t.split(".")[0] for t in read if "." in t} | set(_PARTIES)
    missing = [
        t.path
        for t in TARGETS.values()
        if t.required
        and t.path not in mapped
        and t.path not in _NOT_REQUIRED_IN_MAPPING
        and (t.parent == "" or t.parent in present_objects)
        and t.path not in suggested
    ]
    for party in _PARTIES:
        ids = [f"{party}.{f}" for f in PARTY_ID_FIELDS]
        if not (read | suggested) & set(ids) and not any(i in missing for i in ids):
            missing.append(" or ".join(ids))
    if missing:
        problems.append(
            f"fields: missing {', '.join(missing)} (required by the event contract); "
            "map each to a column or a constant ({column: NAME} or {value: CONSTANT})"
        )
    if mapping.label is not None:
        problems += _spec_problems("label.is_fraud", mapping.label.is_fraud, None)
        if mapping.label.scenario is not None:
            problems += _spec_problems("label.scenario", mapping.label.scenario, None)
    return problems


# ---------------------------------------------------------------- loading


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    if not loc:
        return list(ReplayMapping.model_fields)
    if loc[0] == "source":
        return list(SourceSpec.model_fields)
    if loc[0] == "label" and len(loc) == 1:
        return list(LabelSpec.model_fields)
    return list(FieldSpec.model_fields)


def _describe(exc: ValidationError) -> str:
    lines: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            message = f"unknown key; allowed here: {', '.join(_allowed_keys(loc[:-1]))}"
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"]
        lines.setdefault(where, f"{where}: {message}" if where else message)
    return "; ".join(lines.values())


def parse_mapping(data: Any, *, source: str = "replay mapping") -> ReplayMapping:
    """Validate an already-parsed mapping (a dict); raise ReplayMappingError naming every bad key.

    >>> try:
    ...     parse_mapping({"fields": {"payer.acount_number": {"column": "acct"}}})
    ... except ReplayMappingError as exc:
    ...     print(exc)
    replay mapping: fields.payer.acount_number: is not in the event contract;
    did you mean payer.account_number? ...
    """
    if not isinstance(data, dict):
        raise ReplayMappingError(f"{source}: expected a mapping with a `fields:` section, got {type(data).__name__}")
    try:
        return ReplayMapping.model_validate(data)
    except ValidationError as exc:
        raise ReplayMappingError(f"{source}: {_describe(exc)}") from None


def load_mapping(path: str | Path) -> ReplayMapping:
    """Read and validate a YAML mapping file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReplayMappingError(f"cannot read mapping {path}: {exc.strerror or exc}; check the path") from None
    except UnicodeDecodeError as exc:
        raise ReplayMappingError(f"mapping {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except ValueError as exc:  # a NUL in the path
        raise ReplayMappingError(f"cannot read mapping {path!r}: {exc}; check the path") from None
    try:
        data = load_yaml(text)
    except YamlError as exc:
        raise ReplayMappingError(f"mapping {path} {exc}; fix the file") from None
    return parse_mapping(data, source=str(path))


# ------------------------------------------------------------------- reading


def _format_of(path: Path, mapping: ReplayMapping) -> str:
    if mapping.source.format:
        return mapping.source.format
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes or ".tsv" in suffixes:
        return "csv"
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    raise ReplayMappingError(
        f"cannot tell the format of {path.name} from its suffix; set source.format: csv or parquet"
    )


def read_source(path: str | Path, mapping: ReplayMapping) -> pd.DataFrame:
    """Read the whole file with pyarrow-backed columns.

    CSV cells stay text (so ``10.10`` stays exactly ``10.10``; empty cells are ``""``);
    Parquet keeps its types (ints, decimals, timestamps, nulls). A malformed CSV record is
    a :class:`ReplayMappingError` here; readers that reject it pass ``on_malformed`` to
    :func:`source_chunks`.
    """
    (frame,) = source_chunks(path, mapping, chunk_rows=None)  # None: one chunk, the whole file
    return frame


def source_chunks(
    path: str | Path,
    mapping: ReplayMapping,
    chunk_rows: int | None,
    on_malformed: Callable[[RejectedRow], None] | None = None,
) -> Iterator[pd.DataFrame]:
    """The file's rows ``chunk_rows`` at a time (None: all at once), typed as
    :func:`read_source` types them, each chunk indexed by its rows' positions in the file
    (from 0): a file larger than memory is read a chunk at a time. At least one chunk comes
    (empty for a file without rows), so the columns are always checked.

    A CSV record whose cells do not line up with the header (see :func:`_csv_chunks`)
    goes to ``on_malformed`` as a :data:`ReplayRejectReason.MALFORMED_ROW` reject and
    keeps its position, so the chunks' index skips it; without ``on_malformed`` it is a
    :class:`ReplayMappingError`."""
    path = Path(path)
    fmt = _format_of(path, mapping)

    def parquet_chunks() -> Iterator[pd.DataFrame]:
        # lazy: pyarrow.parquet (~60 ms to import); a CSV replay never needs it
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            # Every column the file holds, under CSV's names for repeats: pandas' metadata is
            # ignored, so a column pandas wrote as the index (a named index such as the
            # transaction id) stays a column the mapping can name, not a hidden index.
            names = _column_names(parquet.schema_arrow.names)

            def frame_of(table: pa.Table, start: int) -> pd.DataFrame:
                frame = table.rename_columns(names).to_pandas(types_mapper=pd.ArrowDtype, ignore_metadata=True)
                frame.index = pd.RangeIndex(start, start + len(frame))
                return frame

            if chunk_rows is None:
                yield frame_of(parquet.read(), 0)
                return
            done = 0
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                yield frame_of(pa.Table.from_batches([batch]), done)
                done += batch.num_rows
            if done == 0:
                yield frame_of(parquet.schema_arrow.empty_table(), 0)

    def malformed(rejected: RejectedRow) -> None:
        if on_malformed is None:
            raise ReplayMappingError(f"{path.name} row {rejected.row_number}: {rejected.detail}")
        on_malformed(rejected)

    rows = _csv_chunks(path, mapping.source, chunk_rows, malformed) if fmt == "csv" else parquet_chunks()
    checked = False
    while True:
        try:
            frame = next(rows)
        except StopIteration:
            break
        except UnicodeDecodeError as exc:
            raise ReplayMappingError(
                f"cannot read {path} as {mapping.source.encoding} text: byte {exc.object[exc.start : exc.end]!r} "
                f"({exc.reason}); set source.encoding in the mapping to the file's encoding, e.g. cp1252 or latin-1"
            ) from None
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ReplayMappingError(f"cannot read {path} as {fmt}: {exc}; check the path and source.format") from None
        if not checked:
            missing = [c for c in mapping.columns() if c not in frame.columns]
            if missing:
                raise ReplayMappingError(
                    f"{path.name} has no column {', '.join(map(repr, missing))} named in the mapping "
                    f"(columns: {', '.join(map(str, frame.columns))}); fix the mapping's column names"
                )
            checked = True
        yield frame


def _column_names(header: list[str]) -> list[str]:
    """A CSV header's names as pandas gives them: an empty name ``Unnamed: <i>``, a
    repeated one ``<name>.1``, ``<name>.2``, ..."""
    names: list[str] = []
    for i, written in enumerate(header):
        name = written or f"Unnamed: {i}"
        base, repeat = name, 0
        while name in names:
            repeat += 1
            name = f"{base}.{repeat}"
        names.append(name)
    return names


def _text_frame(names: list[str], rows: list[list[str]], positions: list[int]) -> pd.DataFrame:
    # Rows are lists of the header's width (checked as they are read); a column built with
    # itemgetter is a list, which pyarrow converts several times faster than zip's tuples.
    columns = {i: pa.array(list(map(itemgetter(i), rows)), pa.string()) for i in range(len(names))}
    return pd.DataFrame(
        {i: pd.arrays.ArrowExtensionArray(cells) for i, cells in columns.items()},
        index=pd.Index(positions, dtype="int64"),
    ).set_axis(names, axis=1)


_CSV_BATCH_ROWS = 65_536
"""Rows turned into columns at a time when a CSV is read whole (a list of Python strings
per cell costs several times the columns' memory)."""


def _csv_chunks(
    path: Path, source: SourceSpec, chunk_rows: int | None, malformed: Callable[[RejectedRow], None]
) -> Iterator[pd.DataFrame]:
    """A CSV's rows as text, every cell as written (empty cells ``""``), blank lines skipped.

    Read with the standard library's CSV reader, record by record, because a record must
    be judged on its own: one whose cell count differs from the header's (an unquoted
    delimiter in a merchant's name, a stray quote, a line cut off) cannot say which cell
    belongs to which column, so it is a reject naming its lines, never a row with its
    cells shifted. pandas' C reader shifts them silently when such a record is the first
    data row (it turns the first column into the index) or the first of a chunk (it drops
    the extra cells), and fails the whole read anywhere else."""
    # utf-8-sig reads UTF-8 and drops a byte-order mark (spreadsheet exports write one), as pandas does.
    encoding = "utf-8-sig" if codecs.lookup(source.encoding).name == "utf-8" else source.encoding
    with path.open(encoding=encoding, newline="") as text:
        records = csv.reader(text, delimiter=source.delimiter)  # the excel dialect: pandas' quoting
        header = next((record for record in records if record), None)  # blank lines before it skipped, as pandas does
        if header is None:
            raise ReplayMappingError(f"{path.name} is empty: a CSV needs a header row naming its columns")
        names = _column_names(header)
        width, size = len(names), chunk_rows or _CSV_BATCH_ROWS
        rows: list[list[str]] = []
        positions: list[int] = []
        frames: list[pd.DataFrame] = []  # the whole file's batches, when it is one chunk
        position, line = 0, records.line_num  # line: where the record before ends
        yielded = False

        def reject(cells: list[str] | None, problem: str) -> None:
            end = records.line_num
            where = f"line {end}" if end == line + 1 else f"lines {line + 1}-{end}"
            malformed(
                RejectedRow(
                    position + 1,
                    ReplayRejectReason.MALFORMED_ROW.value,
                    f"{where}: {problem}, so no cell can be told to be in its column; quote cells that "
                    f"hold {source.delimiter!r} or a quote, close every quote, and check the line is not cut off",
                    cells=cells,
                )
            )

        while True:
            try:
                for record in records:  # the hot loop: one length check per record
                    if len(record) == width:
                        rows.append(record)
                        positions.append(position)
                        position += 1
                        if len(rows) == size:
                            frame = _text_frame(names, rows, positions)
                            rows, positions = [], []
                            if chunk_rows is None:
                                frames.append(frame)
                            else:
                                yield frame
                                yielded = True
                    elif record:  # not a blank line
                        reject(record, f"{len(record)} cell{'s' * (len(record) != 1)} where the header has {width}")
                        position += 1
                    line = records.line_num
                break
            except csv.Error as exc:  # e.g. a cell over the reader's field size limit; reading goes on after it
                reject(None, str(exc))
                position += 1
                line = records.line_num
        last = _text_frame(names, rows, positions)
        if chunk_rows is None:
            yield pd.concat([*frames, last]) if frames else last
        elif rows or not yielded:  # at least one chunk, so the columns are checked
            yield last


# ---------------------------------------------------------------- row mapping


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_ABSENT = object()


def _is_missing(cell: Any) -> bool:
    if cell is None or cell is pd.NA or cell is pd.NaT:
        return True
    if isinstance(cell, str):
        return not cell.strip()
    return isinstance(cell, float) and math.isnan(cell)


def _text(cell: Any) -> str:
    if isinstance(cell, str):
        return cell.strip()
    if isinstance(cell, bool):
        return "true" if cell else "false"
    # A whole number in a float or decimal column (an id column with gaps, read as float)
    # is written as the integer it is: "12", never "12.0", so templates can pad it.
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, Decimal) and cell.is_finite() and cell == cell.to_integral_value():
        return str(int(cell))
    if isinstance(cell, datetime):
        return cell.isoformat()
    return str(cell)  # float: shortest repr, exact for what the writer meant; Decimal: exact


def slug(text: str) -> str:
    """Lower case, every run of characters other than a-z and 0-9 turned into one dot.

    >>> slug("Rippin, Kub and Mann")
    'rippin.kub.and.mann'
    >>> slug("C1231006815")
    'c1231006815'
    """
    return re.sub(r"[^a-z0-9]+", ".", text.lower()).strip(".")


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, Decimal):
        number = value
    else:
        text = _text(value) if not isinstance(value, int) or isinstance(value, bool) else str(value)
        try:
            number = Decimal(text.replace(",", ""))
        except InvalidOperation:
            raise _Reject(ReplayRejectReason.UNPARSABLE_VALUE, f"{where}: {text!r} is not a number") from None
    if not number.is_finite():
        raise _Reject(ReplayRejectReason.UNPARSABLE_VALUE, f"{where}: {number} is not a finite number")
    return number


def _to_amount(unit: str, rounding: AmountRounding | None, where: str) -> Callable[[Any], int]:
    fix = "; fix the source, or round it: add `round: half_even` (or half_up, down) to the mapping's amount_paise"

    def convert(value: Any) -> int:
        number = _decimal(value, where)
        if number.adjusted() >= _AMOUNT_DIGITS:
            # Decided before any arithmetic: the paise of 1e999999 rupees overflow the decimal
            # context, and rounding one of 29 digits or more exceeds its precision.
            raise _Reject(
                DeadLetterReason.ABSURD_AMOUNT,
                f"{where}: {number} {unit} has more than {_AMOUNT_DIGITS} digits before the point; no amount is that large",
            )
        try:
            paise = rupees_to_paise(number, rounding=rounding) if unit == "rupees" else whole_paise(number, rounding)
        except ValueError:
            raise _Reject(
                ReplayRejectReason.FRACTIONAL_PAISE, f"{where}: {number} {unit} is not a whole number of paise{fix}"
            ) from None
        if paise == 0 and number < 0:  # a refund rounded to nothing is still a negative amount
            raise _Reject(
                DeadLetterReason.NON_POSITIVE_AMOUNT,
                f"{where}: {number} {unit} is negative (it rounds to 0 paise); amounts must be >= 0",
            )
        return paise

    return convert


def _to_time(spec: FieldSpec, where: str) -> Callable[[Any], datetime]:
    zone = ZoneInfo(spec.timezone) if spec.timezone else None
    if spec.unit is not None:
        origin = spec.origin or datetime(1970, 1, 1, tzinfo=UTC)
        micros = Decimal(_TIME_UNITS[spec.unit]) * 1_000_000

        def offset(value: Any) -> datetime:
            number = _decimal(value, where)
            try:
                return origin + timedelta(microseconds=int((number * micros).to_integral_value()))
            except OverflowError:
                raise _Reject(
                    ReplayRejectReason.UNPARSABLE_VALUE,
                    f"{where}: {number} {spec.unit} after {origin.isoformat()} is out of range",
                ) from None

        return offset

    def parse(value: Any) -> datetime:
        if isinstance(value, pd.Timestamp):
            moment = value.to_pydatetime()
        elif isinstance(value, datetime):
            moment = value
        else:
            text = _text(value)
            try:
                # A naive result takes the mapping's timezone below, or the contract rejects it.
                moment = datetime.strptime(text, spec.format) if spec.format else datetime.fromisoformat(text)  # noqa: DTZ007
            except ValueError:
                expected = f"format {spec.format!r}" if spec.format else "ISO-8601"
                raise _Reject(
                    ReplayRejectReason.UNPARSABLE_VALUE, f"{where}: {text!r} is not a time in {expected}"
                ) from None
        if moment.tzinfo is None and zone is not None:
            moment = moment.replace(tzinfo=zone)
        return moment  # still naive without a timezone: the contract rejects it

    return parse


def _to_float(where: str) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            return float(
                value if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) else _text(value)
            )
        except ValueError:
            raise _Reject(ReplayRejectReason.UNPARSABLE_VALUE, f"{where}: {_text(value)!r} is not a number") from None

    return convert


_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})


def _to_bool(where: str) -> Callable[[Any], bool]:
    def convert(value: Any) -> bool:
        text = _text(value).lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise _Reject(ReplayRejectReason.UNPARSABLE_VALUE, f"{where}: {text!r} is not true/false or 1/0")

    return convert


def _to_text(value: Any) -> str:
    return _text(value)


class _Extractor:
    """One spec compiled for a given file: cell -> target value, or _ABSENT."""

    def __init__(self, where: str, spec: FieldSpec, index: int | None, convert: Callable[[Any], Any]) -> None:
        self.where = where
        self.spec = spec
        self.index = index
        self.convert = convert
        self.regex = re.compile(spec.pattern) if spec.pattern else None
        self.group = 1 if self.regex is not None and self.regex.groups else 0
        self.transforms = bool(spec.pattern or spec.map is not None or spec.template)
        # Constants are converted once, here, so a bad one fails the whole replay up front.
        self.constant = self._constant(spec.value) if index is None else _ABSENT
        self.default = self._constant(spec.default) if spec.default is not None else _ABSENT

    def _constant(self, value: Any) -> Any:
        try:
            return self.convert(value)
        except _Reject as exc:
            raise ReplayMappingError(f"{exc.detail}; fix the constant in the mapping") from None

    def _fallback(self, why: str | None) -> Any:
        if self.spec.has_default:
            return self.default
        if why is None:
            return _ABSENT
        raise _Reject(ReplayRejectReason.UNMAPPED_VALUE, f"{self.where}: {why}; add it or set a default")

    def __call__(self, row: tuple[Any, ...]) -> Any:
        spec = self.spec
        if self.index is None:
            return self.constant
        cell = row[self.index]
        if _is_missing(cell):
            return self._fallback(None)
        if not self.transforms:
            return self.convert(cell)
        value: Any = _text(cell)
        if self.regex is not None:
            found = self.regex.search(value)
            if found is None or found.group(self.group) is None:
                return self._fallback(f"{spec.column} value {value!r} does not match pattern {spec.pattern!r}")
            value = found.group(self.group)
        if spec.map is not None:
            if value not in spec.map:
                return self._fallback(f"{spec.column} value {value!r} is not in the map")
            value = spec.map[value]
        if spec.template is not None:
            text = _text(value)
            value = spec.template.format(value=text, slug=slug(text))
        return self.convert(value)


def _converter(spec: FieldSpec, kind: str, where: str) -> Callable[[Any], Any]:
    if kind == "amount":
        return _to_amount(spec.unit or "paise", spec.round, where)
    if kind == "time":
        return _to_time(spec, where)
    if kind == "float":
        return _to_float(where)
    if kind == "bool":
        return _to_bool(where)
    return _to_text


class _RowMapper:
    """The mapping compiled against one file's columns."""

    def __init__(self, mapping: ReplayMapping, source_name: str) -> None:
        self.columns = mapping.columns()
        index = {name: i for i, name in enumerate(self.columns)}

        def compile_(where: str, spec: FieldSpec, kind: str) -> _Extractor:
            column = index[spec.column] if spec.column is not None else None
            return _Extractor(where, spec, column, _converter(spec, kind, where))

        self.fields = [
            (tuple(name.split(".")), compile_(name, spec, TARGETS[name].kind))
            for name, spec in mapping.fields.items()
            if not spec.absent
        ]
        self.source_name = source_name
        self.generate_id = "txn_id" not in mapping.fields
        self.default_currency = "currency" not in mapping.fields
        label = mapping.label
        self.is_fraud = compile_("label.is_fraud", label.is_fraud, "bool") if label else None
        self.scenario = compile_("label.scenario", label.scenario, "text") if label and label.scenario else None

    def event(self, row: tuple[Any, ...], row_number: int) -> tuple[dict[str, Any], dict[str, _Reject]]:
        """Raw event dict for check_event, and the cells that could not be mapped (by target
        path; those targets are left out of the dict)."""
        raw: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        failed: dict[str, _Reject] = {}
        if self.generate_id:
            raw["txn_id"] = str(uuid.uuid5(REPLAY_TXN_NAMESPACE, f"{self.source_name}:{row_number}"))
        if self.default_currency:
            raw["currency"] = "INR"
        for path, extract in self.fields:
            try:
                value = extract(row)
            except _Reject as exc:
                failed[".".join(path)] = exc
                continue
            if value is _ABSENT:
                continue
            if len(path) == 1:
                raw[path[0]] = value
            else:
                raw.setdefault(path[0], {})[path[1]] = value
        return raw, failed

    def label(self, row: tuple[Any, ...]) -> tuple[bool, str | None] | None:
        if self.is_fraud is None:
            return None
        is_fraud = self.is_fraud(row)
        if is_fraud is _ABSENT:
            raise _Reject(
                DeadLetterReason.MISSING_FIELD, "label.is_fraud: empty; set default: 0 to count such rows as genuine"
            )
        scenario = self.scenario(row) if self.scenario is not None else None
        return is_fraud, (scenario if is_fraud and scenario is not _ABSENT else None)


def _rows(frame: pd.DataFrame, columns: list[str], batch: int = 8192) -> Iterator[tuple[Any, ...]]:
    """Row tuples of the named columns, materialised one batch at a time."""
    for start in range(0, len(frame), batch):
        part = frame.iloc[start : start + batch]
        yield from zip(*(part[c].tolist() for c in columns)) if columns else ((),) * len(part)


# ------------------------------------------------------------------- pacing


def due_offset(index: int, event_offset_s: float, *, speedup: float | None = None, rate: float | None = None) -> float:
    """Wall-clock seconds after the first send at which event ``index`` is due.

    ``event_offset_s`` is its event time minus the first event's, in seconds.

    >>> due_offset(3, 120.0, speedup=60)   # 2 minutes of event time at 60x
    2.0
    >>> due_offset(3, 120.0, rate=100)      # the 4th event at 100 events/s
    0.03
    >>> due_offset(3, 120.0)                # as fast as possible
    0.0
    """
    if speedup:
        return event_offset_s / speedup
    if rate:
        return index / rate
    return 0.0


class ReplayPacer:
    """Sleeps whenever the replay is ahead of its schedule (see :func:`due_offset`).

    ``clock`` and ``sleep`` are injectable so tests can run on a fake clock. A replay
    that falls behind (a slow broker) sends without sleeping until it catches up.
    """

    def __init__(
        self,
        *,
        speedup: float | None = None,
        rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speedup is not None and rate is not None:
            raise ValueError("pass speedup or rate, not both")
        for name, value in (("speedup", speedup), ("rate", rate)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.speedup, self.rate = speedup, rate
        self.clock, self.sleep = clock, sleep
        self._start: float | None = None
        self._first: datetime | None = None
        self.slept = 0.0

    def wait(self, index: int, event_time: datetime) -> None:
        if not (self.speedup or self.rate):
            return
        now = self.clock()
        if self._start is None:
            self._start, self._first = now, event_time
        assert self._first is not None
        offset = (event_time - self._first).total_seconds()
        ahead = self._start + due_offset(index, offset, speedup=self.speedup, rate=self.rate) - now
        if ahead >= _MIN_SLEEP_S:
            self.sleep(ahead)
            self.slept += ahead


# ------------------------------------------------------------------ replay


@dataclass
class ReplaySummary:
    """What a replay did; ``line()`` is printed at the end of every run."""

    source: str
    dry_run: bool
    rows_read: int = 0
    events_valid: int = 0
    events_sent: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    reject_examples: dict[str, str] = field(default_factory=dict)  # reason -> first "row N: detail"
    rejected_fraud: int = 0  # rejected rows whose label (when the mapping has one) says fraud
    labels: int = 0
    fraud_labels: int = 0
    delivery_failed: int = 0
    first_event_time: datetime | None = None
    last_event_time: datetime | None = None
    seconds: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected_by_reason.items()))
        fraud = f"; {self.rejected_fraud} of them labelled fraud" if self.rejected_fraud else ""
        rejected = f"{self.rejected} rejected ({reasons}{fraud})" if reasons else "0 rejected"
        action = f"dry run, would send {self.events_valid}" if self.dry_run else f"sent {self.events_sent}"
        failed = f", {self.delivery_failed} delivery failures" if self.delivery_failed else ""
        labels = f", {self.labels} labels ({self.fraud_labels} fraud)" if self.labels else ""
        return (
            f"{self.source}: read {self.rows_read} rows, {action} events, {rejected}"
            f"{failed}{labels}, in {self.seconds:.1f}s"
        )

    def count_reject(self, rejected: RejectedRow) -> None:
        reason = rejected.reason
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        self.reject_examples.setdefault(reason, f"row {rejected.row_number}: {rejected.detail}")
        self.rejected_fraud += rejected.is_fraud is True


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A source row that never became an event: what went wrong, and its label if known.

    ``reason`` is the first problem (mapping problems before the contract's, which are in
    DeadLetterReason precedence); ``detail`` names every problem the row has. ``is_fraud``
    and ``scenario`` are the row's label when the mapping has one and it could be read
    (None otherwise): a rejected fraud is a fraud the models never see."""

    row_number: int
    reason: str
    detail: str
    is_fraud: bool | None = None
    scenario: str | None = None
    cells: list[str] | None = None
    """A malformed CSV record's cells as split (None when even that failed): there is no
    row of the header's columns to show in the rejects file."""


REJECTS_COLUMNS = ("row_number", "reason", "detail", "is_fraud", "scenario", "raw")
"""Columns of a rejects file (:func:`replay_file`, :func:`load_labelled`): ``raw`` is the
source row as JSON; ``is_fraud`` is 1/0, empty when the label is unknown."""


@dataclass(slots=True)
class _Valid:
    event: TransactionEvent
    row_number: int
    label: tuple[bool, str | None] | None


def _json_cell(cell: Any) -> Any:
    if _is_missing(cell) and not isinstance(cell, str):
        return None
    if isinstance(cell, (str, bool, int, float)):
        return cell
    return _text(cell)


def _write_rejects(path: Path, chunks: Iterable[pd.DataFrame], rejects: list[RejectedRow]) -> None:
    """The rejects file: each rejected row with its source row as JSON, in row order, from
    the file's rows as :func:`source_chunks` gives them (or the whole frame, as one chunk).
    A malformed record has no row of the header's columns: its raw is the list of its cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rejects, key=lambda r: r.row_number)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(REJECTS_COLUMNS)

        def write(r: RejectedRow, raw: Any) -> None:
            label = "" if r.is_fraud is None else int(r.is_fraud)
            writer.writerow(
                [r.row_number, r.reason, r.detail, label, r.scenario or "", json.dumps(raw, ensure_ascii=False)]
            )

        at = 0
        for frame in chunks:
            if at >= len(ordered):
                break
            if frame.empty:
                continue
            last = int(frame.index[-1])  # chunks are indexed by position in the file, in order
            here = []
            while at < len(ordered) and ordered[at].row_number - 1 <= last:
                here.append(ordered[at])
                at += 1
            in_frame = [r for r in here if r.reason != ReplayRejectReason.MALFORMED_ROW]
            source_rows = frame.loc[[r.row_number - 1 for r in in_frame]].itertuples(index=False, name=None)
            names = [str(c) for c in frame.columns]
            raws = {id(r): dict(zip(names, map(_json_cell, cells))) for r, cells in zip(in_frame, source_rows)}
            for r in here:
                write(r, raws.get(id(r), r.cells))
        for r in ordered[at:]:  # malformed records after the last row
            write(r, r.cells)


def replay_file(
    path: str | Path,
    mapping: ReplayMapping | str | Path,
    *,
    producer: Any = None,
    speedup: float | None = None,
    rate: float | None = None,
    shift_to: datetime | None = None,
    rejects_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    now: datetime | None = None,
    progress: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    chunk_rows: int | None = _CHUNK_ROWS,
) -> ReplaySummary:
    """Map, validate, sort and send one file; return what happened.

    ``producer``: a :class:`~ingestion.producer.TransactionProducer` (or anything with
    ``send_event``, ``send_label``, ``flush`` and ``summary``); None is a dry run that
    validates and reports (rejects and labels files included) but sends nothing.
    ``speedup=k`` plays k seconds of event time per wall-clock second; ``rate`` sends
    that many events per second; neither sends as fast as possible (dry runs never wait).
    ``shift_to`` moves every event by the same amount so the last one lands at that
    instant (replay old data as live). ``now`` (default: the wall clock, read once) is
    the reference for the future-timestamp check, applied after shifting.
    ``rejects_path``: CSV of :data:`REJECTS_COLUMNS` (row number, reason, every problem,
    the row's label when the mapping has one, the source row as JSON), written before
    sending starts. ``labels_path``: JSONL in the shape of
    :meth:`ingestion.simulator.Label.to_dict`; fraud labels also go to the labels
    topic once the replay's event time passes their label_time. ``chunk_rows``: rows
    read and validated at a time (None: the whole file at once); the outcome is the same.
    """
    started = clock()
    if not isinstance(mapping, ReplayMapping):
        mapping = load_mapping(mapping)
    if labels_path is not None and mapping.label is None:
        raise ReplayMappingError(
            "labels_path was given but the mapping has no `label:` section; "
            "add one (label: {is_fraud: {column: ...}}) or drop labels_path"
        )
    now = now if now is not None else datetime.now(UTC)
    if now.tzinfo is None or (shift_to is not None and shift_to.tzinfo is None):
        raise ValueError("now and shift_to must be timezone-aware, e.g. datetime.now(timezone.utc)")
    pacer = ReplayPacer(speedup=speedup, rate=rate, clock=clock, sleep=sleep)
    path = Path(path)
    summary = ReplaySummary(source=path.name, dry_run=producer is None)
    rejects: list[RejectedRow] = []

    def reject(rejected: RejectedRow) -> None:
        rejects.append(rejected)
        summary.count_reject(rejected)

    # Counted once the file is read, malformed records first, as when the whole file was
    # one frame: the summary's reasons and first examples keep that order.
    malformed: list[RejectedRow] = []
    mapped: list[RejectedRow] = []
    # With shift_to the future check has to wait until the times are final.
    check_against = now if shift_to is None else _NO_FUTURE_CHECK
    mapper = _RowMapper(mapping, path.name)
    held = _Held()
    # lazy: tqdm (80 ms to import); txmon.ingestion.landing imports this module without it
    from tqdm import tqdm

    with tqdm(unit="row", desc="validate", disable=not progress, mininterval=1.0) as bar:
        for chunk in source_chunks(path, mapping, chunk_rows, on_malformed=malformed.append):
            # Row numbers are the chunk's positions in the file, so they need no offset.
            for item in _map_rows(chunk, mapper, check_against, mapped.append, progress=False):
                held.add(item)
            summary.rows_read += len(chunk)
            bar.update(len(chunk))
            del chunk
    summary.rows_read += len(malformed)
    for rejected in (*malformed, *mapped):
        reject(rejected)
    order = held.order()  # stable: ties keep file order
    delta = None
    if shift_to is not None:
        order, delta = held.shift(order, shift_to, now, reject)
    summary.events_valid = len(order)
    if len(order):
        summary.first_event_time = held.time(int(order[0]), delta)
        summary.last_event_time = held.time(int(order[-1]), delta)
    if rejects_path is not None:  # the rejected rows' cells from a second read (the file is not held)
        # The malformed records are among the rejects already: the second read passes them by.
        chunks = source_chunks(path, mapping, chunk_rows, on_malformed=lambda _: None)
        _write_rejects(Path(rejects_path), chunks, rejects)

    _send(held.events(order, delta), len(order), mapping, producer, pacer, summary, labels_path, progress)
    summary.seconds = clock() - started
    return summary


def load_labelled(
    path: str | Path,
    mapping: ReplayMapping | str | Path,
    *,
    now: datetime | None = None,
    on_reject: Callable[[RejectedRow], None] | None = None,
    rejects_path: str | Path | None = None,
) -> tuple[list[TransactionEvent], list[Label]]:
    """Read a labelled file into memory: (events, labels), both in event-time order.

    The same mapping, validation and ordering as :func:`replay_file`, nothing sent. The
    whole file is held as one event object per row: ``txmon train`` and ``evaluate`` read
    files a chunk at a time instead (models/sources.read_file, the same rows, rejects and
    labels), and this is the reference they are checked against.

    Rows that cannot be mapped or break the contract are left out (as replay leaves them
    out), and so is a txn_id seen before, as the stream leaves it out (an exact repeat
    silently, other content as a reject); ``labels[i]`` belongs to ``events[i]``, with
    ``label_time = event_time + label.delay``. ``now`` (default: the wall clock) is the
    reference of the future-timestamp check. ``on_reject`` is called with a
    :class:`RejectedRow` for each row left out; ``rejects_path`` gets them all as a CSV
    of :data:`REJECTS_COLUMNS`, as replay's (written even when nothing was rejected, so
    a stale file from an earlier run never stands). Raises ReplayMappingError when the
    mapping has no ``label:`` section.
    """
    if not isinstance(mapping, ReplayMapping):
        mapping = load_mapping(mapping)
    if mapping.label is None:
        raise ReplayMappingError(
            "the mapping has no `label:` section, so the file has no ground truth; "
            "add one (label: {is_fraud: {column: ...}})"
        )
    path = Path(path)
    rejects: list[RejectedRow] = []

    def reject(rejected: RejectedRow) -> None:
        rejects.append(rejected)
        if on_reject is not None:
            on_reject(rejected)

    (frame,) = source_chunks(path, mapping, None, on_malformed=reject)

    valid = _map_rows(frame, _RowMapper(mapping, path.name), now or datetime.now(UTC), reject, progress=False)
    valid.sort(key=lambda v: v.event.event_time)  # stable: ties keep file order
    valid = _first_of_each_txn(valid, reject)
    if rejects_path is not None:
        _write_rejects(Path(rejects_path), [frame], rejects)
    del frame
    delay = mapping.label.delay
    events = [v.event for v in valid]
    labels = [
        Label(v.event.txn_id, v.label[0], v.label[1], v.event.event_time + delay) for v in valid if v.label is not None
    ]
    return events, labels


def _map_rows(
    frame: pd.DataFrame, mapper: _RowMapper, now: datetime, reject: Callable[[RejectedRow], None], progress: bool
) -> list[_Valid]:
    # The progress bar only for an interactive replay.
    from tqdm import tqdm

    valid: list[_Valid] = []
    rows = tqdm(
        _rows(frame, mapper.columns),
        total=len(frame),
        unit="row",
        desc="validate",
        disable=not progress,
        mininterval=1.0,
    )
    # A row's number is its position in the file (the frame's index) from 1, so the rows
    # after a malformed CSV record keep theirs.
    for position, row in zip(frame.index.tolist(), rows, strict=True):
        row_number = position + 1
        raw, failed = mapper.event(row, row_number)
        problems = [Problem(exc.reason, None, exc.detail) for exc in failed.values()]
        try:
            label = mapper.label(row)
        except _Reject as exc:
            label = None
            problems.append(Problem(exc.reason, None, exc.detail))
        # The contract judges what could be mapped, so one pass names every problem the row
        # has; its complaints about targets left out because their cell failed are echoes.
        event, broken = check_event(raw, now=now)
        problems += [p for p in broken if not _echo(p, failed)]
        if problems:
            is_fraud, scenario = label if label is not None else (None, None)
            reject(RejectedRow(row_number, str(problems[0].reason), describe_problems(problems), is_fraud, scenario))
        else:
            assert event is not None
            valid.append(_Valid(event, row_number, label))
    return valid


def _first_of_each_txn(valid: list[_Valid], reject: Callable[[RejectedRow], None]) -> list[_Valid]:
    """Valid rows in the order the stream would receive them, without the rows whose txn_id
    came before: an exact repeat is left out, as the stream's landing step drops it; one
    with other content goes to ``reject`` as ``conflicting_duplicate`` (the stream
    dead-letters it), naming what differs. The first stands either way, so training never
    learns from a row the stream would not score. (The chunked reader training and the
    backtest read files with applies the same rule to its typed columns:
    models/sources.first_of_each_txn.)"""
    first: dict[str, _Valid] = {}
    kept: list[_Valid] = []
    for v in valid:
        seen = first.setdefault(v.event.txn_id, v)
        if seen is v:
            kept.append(v)
            continue
        if seen.event == v.event:
            continue
        a, b = seen.event.model_dump(), v.event.model_dump()
        differs = "; ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k])
        is_fraud, scenario = v.label if v.label is not None else (None, None)
        reject(conflicting_duplicate(v.row_number, v.event.txn_id, seen.row_number, differs, is_fraud, scenario))
    return kept


def conflicting_duplicate(
    row_number: int, txn_id: str, first_row: int, differs: str, is_fraud: bool | None, scenario: str | None
) -> RejectedRow:
    """The reject of a row whose txn_id an earlier row (``first_row``) had with other
    content (``differs``: what changed), for both offline readers."""
    return RejectedRow(
        row_number,
        str(DeadLetterReason.CONFLICTING_DUPLICATE),
        f"txn_id {txn_id} already seen at row {first_row} with other content ({differs}); "
        "the first stands, as in the stream; give a new payment a new txn_id",
        is_fraud,
        scenario,
    )


def _echo(problem: Problem, failed: dict[str, _Reject]) -> bool:
    """Whether a contract problem only follows from a cell that failed to map: the target
    itself missing, or its party/geo object incomplete (``payee`` when ``payee.vpa`` failed)."""
    where = problem.where
    return where is not None and any(path == where or path.startswith(where + ".") for path in failed)


class _Held:
    """The valid events of a file, compactly until they are sent: each as its contract JSON
    (what reaches Kafka) with its event time (int64 microseconds since the epoch, UTC), row
    number and label in arrays, a few hundred bytes a row instead of an event object's KB."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.micros = array.array("q")
        self.rows = array.array("q")
        self.fraud = array.array("b")  # -1: the row has no label
        self.scenarios: list[str | None] = []

    def add(self, item: _Valid) -> None:
        self.values.append(to_json(item.event))
        # Exact: an event time is UTC (the contract converts it) and within years 1-9999.
        self.micros.append((item.event.event_time - _EPOCH) // _MICROSECOND)
        self.rows.append(item.row_number)
        is_fraud, scenario = item.label if item.label is not None else (None, None)
        self.fraud.append(-1 if is_fraud is None else int(is_fraud))
        self.scenarios.append(scenario)

    def label(self, index: int) -> tuple[bool, str | None] | None:
        fraud = self.fraud[index]
        return None if fraud < 0 else (bool(fraud), self.scenarios[index])

    def order(self) -> npt.NDArray[np.intp]:
        """Indices in event-time order; a stable sort, so ties keep file order."""
        return np.argsort(np.frombuffer(self.micros, dtype=np.int64), kind="stable")

    def time(self, index: int, delta: timedelta | None) -> datetime:
        moved = _EPOCH + timedelta(microseconds=self.micros[index])
        return moved if delta is None else moved + delta

    def shift(
        self, order: npt.NDArray[np.intp], shift_to: datetime, now: datetime, reject: Callable[[RejectedRow], None]
    ) -> tuple[npt.NDArray[np.intp], timedelta | None]:
        """Move every event so the last lands at ``shift_to``: the order without the events
        then in the future (rejected), and the delta."""
        if not len(order):
            return order, None
        delta = shift_to.astimezone(UTC) - self.time(int(order[-1]), None)
        limit = now + _MAX_FUTURE_SKEW
        kept = np.ones(len(order), dtype=bool)
        for at, index in enumerate(order.tolist()):
            moved = self.time(index, delta)
            if moved > limit:
                label = self.label(index)
                is_fraud, scenario = label if label is not None else (None, None)
                reject(
                    RejectedRow(
                        self.rows[index],
                        DeadLetterReason.FUTURE_TIMESTAMP.value,
                        f"event_time {moved.isoformat()} (shifted by {delta}) is more than "
                        f"{_MAX_FUTURE_SKEW} ahead of {now.isoformat()}; pick an earlier shift_to",
                        is_fraud,
                        scenario,
                    )
                )
                kept[at] = False
        return order[kept], delta

    def events(
        self, order: npt.NDArray[np.intp], delta: timedelta | None
    ) -> Iterator[tuple[TransactionEvent, tuple[bool, str | None] | None]]:
        """Each event rebuilt from its JSON (the same bytes again), shifted by ``delta``."""
        for index in order.tolist():
            event = TransactionEvent.model_validate_json(self.values[index])
            if delta is not None:
                event = event.model_copy(update={"event_time": event.event_time + delta})
            yield event, self.label(index)


def _send(
    valid: Iterable[tuple[TransactionEvent, tuple[bool, str | None] | None]],
    count: int,
    mapping: ReplayMapping,
    producer: Any,
    pacer: ReplayPacer,
    summary: ReplaySummary,
    labels_path: str | Path | None,
    progress: bool,
) -> None:
    # lazy: tqdm (80 ms to import); txmon.ingestion.landing imports this module without it
    from tqdm import tqdm

    delay = mapping.label.delay if mapping.label else timedelta(0)
    releaser = (
        LabelReleaser(producer, Path(labels_path) if labels_path else None) if mapping.label is not None else None
    )
    failed_before = producer.summary.failed if producer is not None else 0
    bar = tqdm(total=count, unit="tx", desc="send", disable=not progress, mininterval=1.0)
    try:
        for index, (event, label) in enumerate(valid):
            if producer is not None:
                pacer.wait(index, event.event_time)
                producer.send_event(event)
                summary.events_sent += 1
            if releaser is not None and label is not None:
                is_fraud, scenario = label
                releaser(Label(event.txn_id, is_fraud, scenario, event.event_time + delay), event)
                summary.labels += 1
                summary.fraud_labels += is_fraud
            bar.update(1)
    finally:
        bar.close()
        if releaser is not None:
            releaser.close(release_pending=True)
        if producer is not None:
            producer.flush()
            summary.delivery_failed = producer.summary.failed - failed_before
