"""Typed options: every configurable value declared once with its default, type, range and help.

A command's options are a nested dict whose leaves are :class:`Opt` (``{"train": {"lr": Opt(2e-5,
number(0, low_open=True), "learning rate")}}``). From that one declaration come the defaults
(:func:`defaults_of`), the ``--help`` listing (:func:`describe`) and the check of a finished
config (:func:`validate`), which gives every bad value the same one-line message::

    train.lr: expected a positive number, got 'abc' (in training/configs/x.yaml)

Types are pydantic v2 annotations validated strictly (no "8" for 8, no "yes" for true, no NaN),
so a value that is accepted is the value the trainer uses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, Strict, TypeAdapter, ValidationError

from easyanimate_core.errors import InputError


@dataclass(frozen=True)
class Kind:
    """A pydantic annotation and how a message names it ("a positive number")."""

    annotation: Any
    expected: str
    choices: tuple = ()
    value_type: type = str   # what a command-line flag reads (float, int, bool, str, list, dict)

    @cached_property
    def adapter(self) -> TypeAdapter:
        return TypeAdapter(self.annotation)

    def check(self, value):
        """The value as the trainer uses it; ``ValueError`` when it does not fit."""
        try:
            return self.adapter.validate_python(value)
        except ValidationError as error:
            raise ValueError(self.expected) from error


@dataclass(frozen=True)
class Opt:
    default: Any
    kind: Kind
    help: str


def _bounds(low, high, low_open, high_open) -> tuple[dict, str]:
    limits, words = {}, ""
    if low is not None:
        limits["gt" if low_open else "ge"] = low
    if high is not None:
        limits["lt" if high_open else "le"] = high
    if low is not None and high is not None:
        words = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        words = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        words = f" {'<' if high_open else '<='} {high}"
    return limits, words


def number(low=None, high=None, low_open=False, high_open=False) -> Kind:
    limits, words = _bounds(low, high, low_open, high_open)
    expected = "a positive number" if (low == 0 and low_open and high is None) else f"a number{words}"
    return Kind(Annotated[float, Strict(), Field(allow_inf_nan=False, **limits)], expected, value_type=float)


def whole(low=0, high=None, multiple: int | None = None) -> Kind:
    limits, words = _bounds(low, high, False, False)
    if multiple:
        limits["multiple_of"], words = multiple, f"{words}, a multiple of {multiple}"
    return Kind(Annotated[int, Strict(), Field(**limits)], f"a whole number{words}", value_type=int)


def flag() -> Kind:
    return Kind(Annotated[bool, Strict()], "true or false", value_type=bool)


def text() -> Kind:
    return Kind(Annotated[str, Strict()], "a text value")


def path() -> Kind:
    return Kind(Annotated[str, Strict()], "a path (text; empty for none)")


def choice(*values, aliases: dict | None = None) -> Kind:
    """One of ``values``; ``aliases`` map other spellings first (YAML reads a bare ``no`` as false)."""
    annotation = Literal[values]
    if aliases:
        annotation = Annotated[annotation, BeforeValidator(lambda v: aliases.get(v, v) if isinstance(v, bool) or
                                                           v is None else v)]
    return Kind(annotation, "one of " + ", ".join(map(str, values)), tuple(values))


def listof(item: Kind, length: int | None = None, min_length: int = 0) -> Kind:
    limits = {"min_length": length, "max_length": length} if length is not None else {"min_length": min_length}
    size = f"{length} " if length is not None else ("one or more " if min_length == 1 else "")
    return Kind(Annotated[list[item.annotation], Strict(), Field(**limits)],
                f"a list of {size}values, each {item.expected}", item.choices, list)


def either(first: Kind, second: Kind) -> Kind:
    return Kind(first.annotation | second.annotation, f"{first.expected} or {second.expected}",
                value_type=first.value_type)


def optional(item: Kind) -> Kind:
    return Kind(item.annotation | None, f"{item.expected} (or nothing)", item.choices, item.value_type)


def mapping() -> Kind:
    return Kind(dict[str, Any], "a mapping of options (key: value lines)", value_type=dict)


def free(help_text: str) -> Opt:
    """A group of options passed on as they are (a model config): any keys."""
    return Opt({}, mapping(), help_text)


def from_config(model_class, config: dict, name: str, example: str):
    """``model_class.from_config(config)`` for a free-form option group: a value the model cannot
    take (``ch: abc``) is one line naming the group, not a traceback from inside the model."""
    from easyanimate_core.errors import EasyAnimateError

    try:
        return model_class.from_config(dict(config))
    except EasyAnimateError:
        raise
    except (TypeError, ValueError, KeyError, ZeroDivisionError, RuntimeError) as error:
        raise InputError(f"{name} is not a usable {model_class.__name__} config ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); compare its keys and values with "
                         f"{example}.") from None


# ---------------------------------------------------------------- trees of options

def is_group(node) -> bool:
    return isinstance(node, dict)


def defaults_of(options: dict) -> dict:
    return {k: defaults_of(v) if is_group(v) else copy.deepcopy(v.default) for k, v in options.items()}


def with_defaults(options: dict, overrides: dict, where: str = "stage defaults", prefix: str = "") -> dict:
    """A copy of ``options`` whose defaults ``overrides`` (a nested dict of values) replace."""
    result = dict(options)
    for key, value in overrides.items():
        name = prefix + key
        if key not in options:
            raise InputError(f"{where}: unknown option {name!r}; known options at this level are "
                             f"{sorted(options)}.")
        if is_group(options[key]):
            result[key] = with_defaults(options[key], value, where, name + ".")
        elif isinstance(options[key].default, dict):  # a free group: its default mapping grows
            result[key] = replace(options[key], default={**options[key].default, **value})
        else:
            result[key] = replace(options[key], default=value)
    return result


def validate(config: dict, options: dict, sources: dict | None = None, prefix: str = "") -> dict:
    """``config`` with every value checked and converted by its option's kind; the first value
    that does not fit is one :class:`InputError` naming the option, what it takes and where the
    value came from (``sources``: dotted name -> file or "command line")."""
    sources = sources or {}
    checked = {}
    for key, node in options.items():
        name = prefix + key
        if is_group(node):
            checked[key] = validate(config[key], node, sources, name + ".")
            continue
        try:
            checked[key] = node.kind.check(config[key])
        except ValueError as error:
            source = sources.get(name) or next((s for n, s in sources.items() if name.startswith(n + ".")),
                                               "the defaults")
            raise InputError(f"{name}: expected {error}, got {config[key]!r} (in {source})") from None
    return checked


def show(value) -> str:
    """A default as it would be written after ``key=`` ("none" for no value)."""
    if value is None:
        return "none"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").removesuffix(
        "...").strip()


def describe(options: dict, prefix: str = "") -> list[str]:
    """One line per option: ``name=default  help [choices]``."""
    lines = []
    for key, node in options.items():
        name = prefix + key
        if is_group(node):
            lines += describe(node, name + ".")
            continue
        choices = f" [{' | '.join(map(str, node.kind.choices))}]" if node.kind.choices else ""
        lines.append(f"  {name}={show(node.default)}  {node.help}{choices}")
    return lines


def walk(options: dict, prefix: str = ""):
    """``(dotted name, Opt)`` of every option."""
    for key, node in options.items():
        if is_group(node):
            yield from walk(node, prefix + key + ".")
        else:
            yield prefix + key, node
