"""Training configuration: a plain nested dict built from three layers, later ones winning:

1. the defaults of the trainer's options (training.options: every key that exists, with its
   default, type, range and help),
2. a YAML file given with ``--config``,
3. ``key=value`` overrides on the command line (dotted keys reach into nested dicts; values are
   parsed as YAML, so ``lr=2e-5``, ``data.frames=[8,16]`` and ``ema=true`` have their natural types).

Groups whose default is an empty mapping (a model config, a scheduler config) are free-form: any
keys are accepted there and passed on as they are.

Unknown keys are rejected with one sentence, so a typo never trains with a silently ignored option;
every value is then checked against its option's type and range (training.options).
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import yaml

from easyanimate_core.errors import InputError


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot, so
    ``lr: 1e-4`` and ``lr=2e-3`` would arrive as the strings '1e-4' and '2e-3'."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def load_yaml(text: str, where: str):
    """``text`` parsed; a syntax error is one line naming ``where`` it is and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{where} is not valid YAML ({problem}{place}); fix the syntax (quote values that hold "
                         f"': ' or '#').") from None


def free_form_groups(defaults: dict, prefix: str = "") -> set:
    """Dotted names of the groups whose default is an empty mapping."""
    found = set()
    for key, value in defaults.items():
        if isinstance(value, dict):
            found |= {prefix + key} if not value else free_form_groups(value, prefix + key + ".")
    return found


def _merge(base: dict, extra: dict, where: str, prefix: str = "", free=None, sources=None) -> dict:
    """Merge ``extra`` into ``base`` checking names; ``sources`` (when given) records ``where``
    each dotted name was set."""
    free = free_form_groups(base) if free is None else free
    sources = {} if sources is None else sources
    for key, value in extra.items():
        name = prefix + str(key)
        if prefix.rstrip(".") in free:
            base[key] = copy.deepcopy(value)
            sources[name] = where
            continue
        if key not in base:
            raise InputError(f"{where}: unknown option {name!r}; known options at this level are "
                             f"{sorted(base)}; fix the spelling or remove it.")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, where, name + ".", free, sources)
        elif isinstance(base[key], dict) and name not in free:
            raise InputError(f"{where}: option {name!r} is a group of options, found the single value "
                             f"{value!r}; set its members as {name}.<member>=value.")
        else:
            base[key] = value
            sources[name] = where
    return base


def parse_override(item: str) -> dict:
    """``a.b=1`` -> ``{"a": {"b": 1}}`` with the value parsed as YAML."""
    if "=" not in item:
        raise InputError(f"command-line option {item!r} is not of the form key=value; "
                         f"write e.g. lr=1e-4 (or use --config FILE).")
    key, text = item.split("=", 1)
    value = load_yaml(text, f"the value of command-line option {key!r}") if text.strip() else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def read_yaml_options(yaml_path) -> dict:
    """The mapping of options in a YAML config file (the trainers' and ``generate``'s)."""
    path = Path(yaml_path)
    if not path.is_file():
        raise InputError(f"config file {yaml_path} does not exist; pass an existing YAML file "
                         f"(the shipped ones are in training/configs/).")
    loaded = load_yaml(path.read_text(), f"config file {yaml_path}") or {}
    if not isinstance(loaded, dict):
        raise InputError(f"config file {yaml_path} must hold a mapping of options, found "
                         f"{type(loaded).__name__}; write it as 'key: value' lines.")
    return loaded


def build_config(defaults: dict, yaml_path: str | None = None, overrides=(), sources: dict | None = None) -> dict:
    config = copy.deepcopy(defaults)
    free = free_form_groups(defaults)
    if yaml_path:
        _merge(config, read_yaml_options(yaml_path), str(yaml_path), free=free, sources=sources)
    for item in overrides:
        _merge(config, parse_override(item), "command line", free=free, sources=sources)
    return config


def parse_args(command: str, argv, options: dict, description: str):
    """The shared command line of every trainer: ``--config``, ``--resume`` and key=value items,
    checked against the command's typed ``options`` (training.options) before anything runs."""
    from training.options import defaults_of, describe, validate

    parser = argparse.ArgumentParser(
        prog=f"run.py {command}", description=description,
        epilog="options (key=value, dotted for groups; a YAML file uses the same names), with defaults:\n"
               + "\n".join(describe(options)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="YAML file with options (see training/configs/); "
                                                           "key=value items win over it")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the latest checkpoint in train.output_dir (bare --resume), or from "
                             "the given checkpoint folder")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="options to set, e.g. train.lr=1e-4 data.frames=16 (listed below)")
    args = parser.parse_args(list(argv))
    overrides, resume = list(args.overrides), args.resume
    if resume and "=" in resume and not Path(resume).exists():  # "--resume a=b": a bare --resume
        overrides.insert(0, resume)
        resume = "latest"
    sources: dict = {}
    config = build_config(defaults_of(options), args.config, overrides, sources)
    return validate(config, options, sources), resume
