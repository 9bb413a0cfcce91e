"""Reading the YAML files people write: plain data only, and every key of a mapping once.

Every YAML file txmon reads (the settings, the alerting config, the rules, the replay
mappings) is read by :func:`load_yaml`, so they all refuse the same things the same way.
PyYAML's safe loader keeps the last of two equal keys and says nothing, so a second
``threshold:`` line an operator added lower down would quietly replace the first; here it
is refused, naming the key and both lines. Merge keys (``<<: *defaults``) still work: a key
written beside a merge overrides the merged one, as YAML's merge key means it to.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationInfo, field_validator

from txmon.infra.errors import YamlError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names one key twice (``key``; 1-based ``first_line`` and ``second_line``)."""

    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark, mapping: yaml.Mark) -> None:
        self.key, self.first_line, self.second_line = key, first.line + 1, second.line + 1
        super().__init__(
            "while constructing a mapping",
            mapping,
            f"found the key {key!r} twice, on lines {self.first_line} and {self.second_line}",
            second,
        )


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice.

    Keys are compared as constructed, as the dict they go into compares them: ``1`` and
    ``0x1`` (or ``1`` and ``true``) are one key written twice. Two merge keys in one mapping
    are refused too; merge a list instead (``<<: [*a, *b]``).
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            # The keys written in this mapping, before flatten_mapping puts the merged ones
            # in front of them: only these must be unique, a merged key may be overridden.
            written = [key for key, _ in node.value if key.tag != _MERGE_TAG]
            merges = [key for key, _ in node.value if key.tag == _MERGE_TAG]
            if len(merges) > 1:
                raise DuplicateKeyError("<<", merges[0].start_mark, merges[1].start_mark, node.start_mark)
            self.flatten_mapping(node)
            seen: dict[Any, yaml.Mark] = {}
            for key_node in written:
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # a list or mapping as a key: the same refusal as PyYAML's own
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                    ) from None
                if first is not key_node.start_mark:
                    raise DuplicateKeyError(key, first, key_node.start_mark, node.start_mark)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_yaml(text: str) -> Any:
    """The data one YAML document holds, read by :class:`UniqueKeyLoader`.

    Raises YamlError for anything else, its message a clause the caller puts after the
    file's name (``f"{path} {exc}; fix the file"``): not YAML, more than one document, a
    tag, a key given twice, nesting too deep for the parser, a scalar its tag cannot read.

    >>> load_yaml("a: 1\\nb: [x, y]\\n")
    {'a': 1, 'b': ['x', 'y']}
    >>> load_yaml("threshold: 5\\nname: big\\nthreshold: 50\\n")
    Traceback (most recent call last):
    ...
    txmon.infra.errors.YamlError: has the key 'threshold' twice in one mapping, on lines 1 and 3 ...
    """
    try:
        # UniqueKeyLoader is a SafeLoader: no tag builds a Python object beyond plain data.
        return yaml.load(text, Loader=UniqueKeyLoader)
    except DuplicateKeyError as exc:
        lines = exc.first_line, exc.second_line
        where = f"on lines {lines[0]} and {lines[1]}" if lines[0] != lines[1] else f"both on line {lines[0]}"
        raise YamlError(
            f"has the key {exc.key!r} twice in one mapping, {where} (PyYAML would keep the last one silently); keep one"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"is not valid YAML ({yaml_problem(exc)})") from None
    except RecursionError:  # PyYAML composes and builds nested collections recursively
        raise YamlError("nests too deeply to be read") from None
    except (ValueError, LookupError, AttributeError) as exc:
        # PyYAML's constructors let some bad scalars escape as plain Python errors: an
        # impossible date (2020-13-01) or an explicit tag on the wrong text (!!int abc).
        raise YamlError(f"has a value YAML cannot read ({exc})") from None


def _kinds(annotation: Any) -> set[Any]:
    """The plain types a field's annotation admits, through ``Annotated`` and unions.

    >>> sorted(k.__name__ for k in _kinds(Annotated[int, "x"] | None))
    ['NoneType', 'int']
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    return {annotation}


def refuse_lookalikes(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """Refuse a value pydantic's lax mode would take for something it does not mean.

    ``port: true`` or a rule's ``score: true`` would be 1 (a bool is an int to Python) and
    ``state_dir: ''`` the project root (``Path('')`` is ``.``): both are slips in a file, not
    settings. A number written as text (``"5"``, which is how every TXMON_* variable
    arrives) still converts, and a field that takes booleans too keeps them.
    """
    name = info.field_name
    if name is None:
        return value
    kinds = _kinds(model.model_fields[name].annotation)
    if isinstance(value, bool) and bool not in kinds and kinds & {int, float}:
        raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
    if isinstance(value, str) and not value.strip() and Path in kinds:
        raise ValueError("an empty path, which would be read as '.'; name the path, or leave the key out")
    return value


class WrittenModel(BaseModel):
    """A model of a file people write (settings, alerting, rules, replay mappings): no
    boolean taken for a number, no empty text for a path (:func:`refuse_lookalikes`)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_lookalikes(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_lookalikes(cls, value, info)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message on one line, placed by line and column."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return " ".join(part for part in (exc.context, exc.problem) if part) + where
    return str(exc).splitlines()[0]


__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "WrittenModel", "load_yaml", "refuse_lookalikes", "yaml_problem"]
