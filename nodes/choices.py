"""Combo options shared by several node files, and the one check a combo value gets.

ComfyUI validates combo values before a node runs; the check covers graphs run headless or sent
through the API unchecked, where a typo would otherwise end in a KeyError."""

from __future__ import annotations

import torch

from ..easyanimate_core.errors import InputError

# Weight precision of the T5 / CLIP loaders; auto keeps the stored one.
LOAD_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_choice(name: str, value, options):
    """``value`` when it is one of ``options``; otherwise one InputError naming the input and the choices."""
    if value not in options:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(options)}.")
    return value
