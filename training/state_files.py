"""Any ``state_dict`` as a safetensors file (its tensors) + a JSON file (everything else).

Checkpoints are read back on ``--resume``, often from folders that came from elsewhere; a pickle
there would run whatever code it names. This pair of files can hold what optimizers, schedulers,
EMA and counters keep (nested dicts, lists, tuples, numbers, strings, tensors) and nothing else,
so loading one never executes anything.

In the JSON, a tensor is ``{"__tensor__": key}`` (the key in the safetensors file), a tuple is
``{"__tuple__": [...]}`` and a dict whose keys are not all plain strings (an optimizer's state is
keyed by parameter index) is ``{"__items__": [[key, value], ...]}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from easyanimate_core.errors import InputError

MARKERS = ("__tensor__", "__tuple__", "__items__")


def _split(value, key: str, tensors: dict):
    if isinstance(value, torch.Tensor):
        name = f"{len(tensors)}:{key}"  # numbered: {"a": {"b": x}} and {"a.b": y} flatten to one path
        tensors[name] = value.detach().cpu()
        return {"__tensor__": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in MARKERS for k in value):
            return {k: _split(v, f"{key}.{k}", tensors) for k, v in value.items()}
        return {"__items__": [[_split(k, f"{key}.k{i}", tensors), _split(v, f"{key}.{i}", tensors)]
                              for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{key} holds a {type(value).__name__}, which a checkpoint cannot store without pickle")


def _join(value, tensors: dict):
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_join(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_join(k, tensors): _join(v, tensors) for k, v in value["__items__"]}
    return {k: _join(v, tensors) for k, v in value.items()}


def save_state(state, path_stem) -> None:
    """``state`` as ``<stem>.safetensors`` + ``<stem>.json``."""
    from easyanimate_core.checkpoints import save_state_dict

    stem = Path(path_stem)
    tensors: dict = {}
    skeleton = _split(state, "state", tensors)
    save_state_dict(stem.with_name(stem.name + ".safetensors"), tensors)
    json_path = stem.with_name(stem.name + ".json")
    temporary = json_path.with_name(json_path.name + ".tmp")
    temporary.write_text(json.dumps(skeleton))
    os.replace(temporary, json_path)


def load_state(path_stem, what: str):
    """The state :func:`save_state` wrote; a missing or damaged file is one :class:`InputError`
    naming it (``what`` says which state it is)."""
    from safetensors.torch import load_file

    stem = Path(path_stem)
    files = [stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")]
    for file in files:
        if not file.is_file():
            raise InputError(f"checkpoint {stem.parent} has no {file.name} ({what}); resume from another "
                             f"checkpoint or start a new output_dir.")
    try:
        skeleton = json.loads(files[0].read_text())
        tensors = load_file(str(files[1]))
        return _join(skeleton, tensors)
    except Exception as error:  # json, safetensors and a missing tensor key raise different types
        raise InputError(f"checkpoint file {files[0].name} / {files[1].name} in {stem.parent} is damaged "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         f"resume from an earlier checkpoint or start a new output_dir.") from error
