"""Types and ranges of the transformer config fields, checked in one place.

A config.json (or a config dict given to a loader or trainer) with a string where a number goes
would otherwise fail deep inside model building with a bare ValueError / TypeError. Every loader
path (``resolve_transformer_config`` for files, ``model_options`` for ``from_config``, and
``motion_options`` for motion-module kwargs) checks its fields here first, so the user sees one
line naming the field, the value and what it must be.
"""

from __future__ import annotations

import math

from ..errors import InputError

# name -> (kind, minimum); kind: "int" (whole number), "float", "bool"; None values are allowed
# where the reference allows them (out_channels, caption_channels, cross_attention_dim, ...).
TRANSFORMER_FIELDS = {
    "num_attention_heads": ("int", 1),
    "attention_head_dim": ("int", 1),
    "num_layers": ("int", 1),
    "in_channels": ("int", 1),
    "out_channels": ("int", 1),
    "patch_size": ("int", 1),
    "sample_size": ("int", 1),
    "cross_attention_dim": ("int", 1),
    "caption_channels": ("int", 1),
    "norm_eps": ("float", 0.0),
    "interpolation_scale": ("float", 0.0),
    "attention_bias": ("bool", None),
    "enable_uvit": ("bool", None),
}
MOTION_FIELDS = {
    "num_attention_heads": ("int", 1),
    "num_transformer_block": ("int", 1),
    "temporal_position_encoding_max_len": ("int", 1),
    "temporal_attention_dim_div": ("int", 1),
    "block_size": ("int", 1),
    "temporal_position_encoding": ("bool", None),
    "zero_initialize": ("bool", None),
    "remove_time_embedding_in_photo": ("bool", None),
}
_WHAT = {"int": "a whole number", "float": "a number", "bool": "true or false"}


def check_fields(config: dict, fields: dict, where: str = "model config") -> None:
    """Raise :class:`InputError` for the first field of ``config`` whose value has the wrong type
    or is out of range; fields that are absent or None are left to the defaults."""
    if not isinstance(config, dict):
        raise InputError(f"the {where} is a {type(config).__name__}, expected a JSON object of config keys; "
                         f"use the config.json that came with the weights.")
    for key, (kind, minimum) in fields.items():
        value = config.get(key)
        if value is None:
            continue
        if not _is_kind(value, kind) or (minimum is not None and not _in_range(value, kind, minimum)):
            bound = "" if minimum is None else (f" >= {minimum}" if kind == "int" else f" > {minimum}")
            raise InputError(f"{where} field {key} is {value!r} but must be {_WHAT[kind]}{bound}; "
                             f"fix it in config.json (or the config you passed), or use the one that came "
                             f"with the weights.")


def _is_kind(value, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def _in_range(value, kind: str, minimum) -> bool:
    return value >= minimum if kind == "int" else value > minimum
