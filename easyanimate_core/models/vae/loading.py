"""``load_vae``: a released ``vae/`` folder (config.json + weights), a model folder holding one, or
a single weights file, into a :class:`VideoVAE` with strict key and shape checks."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...errors import CheckpointError
from .blocks import DOWN_BLOCKS, UP_BLOCKS, parse_block_types
from .video_vae import CONFIG_DEFAULTS, VideoVAE, normalize_config

log = logging.getLogger(__name__)

_SHOWN = 3  # keys quoted per kind of mismatch


def load_vae(path, dtype: torch.dtype | None = None, device=None, config: dict | None = None,
             preset: str | None = None, upcast: bool = False) -> VideoVAE:
    """Load the EasyAnimate video VAE.

    ``path``: a ``vae/`` folder, a model folder with a ``vae/`` subfolder, or a weights file
    (.safetensors, or a weights-only torch file). ``config`` replaces the folder's config.json;
    a loose file without either needs ``preset`` "v3" (slice VAE) or "v2" (MagViT), because both
    have identical weights. ``dtype`` is the storage dtype (default float32); ``upcast`` runs
    fp16 / bf16 weights in float32. Training-only keys (``loss.*``, discriminators) are dropped
    with a log note; any other missing, unexpected or mis-shaped key is an error.
    """
    from ...checkpoints import check_finite, drop_training_keys, load_config, load_state_dict, resolve_vae_config
    from ...checkpoints.convert import describe_dropped

    path = Path(path)
    subfolder = "vae" if path.is_dir() and not (path / "config.json").is_file() and (path / "vae").is_dir() \
        else None
    if config is None:
        config = load_config(path, subfolder)
    if config is not None:
        config = _parse_block_names(config, path)
    state_dict = load_state_dict(path, subfolder)
    state_dict, dropped = drop_training_keys(state_dict)
    check_finite(state_dict, str(path))
    for note in describe_dropped(dropped):
        log.info("%s: %s", path.name, note)
    resolved = normalize_config(resolve_vae_config(state_dict, config, preset, source=str(path)), source=str(path))

    with torch.device("meta"):
        model = VideoVAE(resolved)
    _check_keys(model, state_dict, path)
    dtype = dtype or torch.float32
    model.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True, assign=True)
    model.to(device or "cpu").eval()
    if upcast and dtype in (torch.float16, torch.bfloat16):
        model.compute_dtype = torch.float32
    model.load_notes = describe_dropped(dropped)
    return model


def _parse_block_names(config, path):
    """Block types as lists: released config.json files may store them as one tuple string."""
    config = dict(config)
    levels = len(config.get("ch_mult", CONFIG_DEFAULTS["ch_mult"]))
    for key, known in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        if config.get(key) is not None:
            config[key] = parse_block_types(config[key], known, key, levels)
    return config


def _check_keys(model, state_dict, path):
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {expected[k]}" for k in expected
             if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", wrong)):
        if items:
            more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
            parts.append(f"{len(items)} {what}: {', '.join(items[:_SHOWN])}{more}")
    raise CheckpointError(f"{path} does not fit the video VAE its config describes ({'; '.join(parts)}); use the "
                          f"config.json that came with these weights or an EasyAnimate v2/v3 vae file.")
