"""AnimateDiff-style motion module, as EasyAnimate puts one into every DiT block.

Per frame GroupNorm(32) -> Linear ``proj_in`` -> ``num_transformer_block`` x [for each attention
type: x = Attn(LN(x) + PE(frame)) + x; then x = GEGLU-FF(LN(x)) + x] -> zero-initialised Linear
``proj_out`` -> + module input. The residual lives inside the module; ``motion_scale`` scales the
module's contribution at inference (1 = as trained, 0 = image model).

Attention types (config only: they change no tensor shape):

- ``Temporal``: each spatial position attends over the frames (sequence length F).
- ``Temporal`` with ``grid`` (v1 "VanillaGrid", ``block_size`` n): the tokens of an aligned
  n x n spatial cell attend over all frames together (sequence (F, n, n), length F n^2).
- ``Global`` (v3 odd blocks): all F*h*w tokens of a video attend to each other; the attention
  dispatch never materialises the N x N score matrix.

The frame PE is added to the normalised attention input (so it enters q, k and v, not the
residual). It is a fixed table and is not stored: ``pos_encoder.pe`` keys in files are ignored.

Key names equal the released files: ``attn_temporal.temporal_transformer.{norm, proj_in,
transformer_blocks.0.{attention_blocks.i.{to_q,to_k,to_v,to_out.0}, norms.i, ff.net.0.proj,
ff.net.2, ff_norm}, proj_out}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints.config_fields import MOTION_FIELDS, check_fields
from ..checkpoints.presets import HYBRID_MOTION_BLOCKS, MOTION_BLOCKS, MOTION_CONFIG_KEYS, motion_keys, motion_version
from ..errors import InputError
from .embeddings import frame_pos_embed
from .layers import Attention, FeedForward, LayerNorm, Linear, zero_

# Defaults of the reference's VanillaTemporalModule for keys a config leaves out.
MOTION_DEFAULTS = {
    "num_attention_heads": 8,
    "num_transformer_block": 2,
    "attention_block_types": ("Temporal_Self", "Temporal_Self"),
    "temporal_position_encoding": False,
    "temporal_position_encoding_max_len": 4096,
    "temporal_attention_dim_div": 1,
    "zero_initialize": True,
    "block_size": 1,
    "remove_time_embedding_in_photo": False,
    "cross_frame_attention_mode": None,
    "global_attention": False,
    "qk_norm": False,
}
MOTION_MODULE_TYPES = ("Vanilla", "VanillaGrid")


def motion_options(kwargs: dict | None, motion_module_type: str) -> dict:
    """Reference motion-module kwargs + type -> validated options with defaults filled in."""
    if motion_module_type not in MOTION_MODULE_TYPES:
        raise InputError(f"motion_module_type {motion_module_type!r} is not supported; "
                         f"expected one of {', '.join(MOTION_MODULE_TYPES)} (fix the model config).")
    check_fields(kwargs or {}, MOTION_FIELDS, "motion module config")
    unknown = set(kwargs or {}) - set(MOTION_DEFAULTS)
    if unknown:
        raise InputError(f"motion module config has unknown keys {sorted(unknown)}; expected only "
                         f"{sorted(MOTION_DEFAULTS)} (fix the model config).")
    opts = {**MOTION_DEFAULTS, **(kwargs or {})}
    for key in ("cross_frame_attention_mode", "global_attention", "qk_norm"):
        if opts[key] not in (None, False):
            raise InputError(f"motion module option {key}={opts[key]!r} has no released weights and is not "
                             f"supported; remove it from the model config.")
    if not isinstance(opts["attention_block_types"], (list, tuple)):
        raise InputError(f"motion module config field attention_block_types is {opts['attention_block_types']!r} "
                         f"but must be a list such as [\"Temporal_Self\", \"Temporal_Self\"] (fix the model config).")
    modes = []
    for name in opts["attention_block_types"]:
        if name not in ("Temporal_Self", "Global_Self"):
            raise InputError(f"motion module attention type {name!r} is not supported; expected "
                             f"'Temporal_Self' or 'Global_Self' (fix the model config).")
        modes.append(name.split("_")[0])
    opts["modes"] = tuple(modes)
    opts["grid"] = motion_module_type == "VanillaGrid"
    return opts


class MotionAttention(Attention):
    """Self-attention of a motion module along frames (``Temporal``) or over the whole video
    (``Global``). q/k/v have no bias, ``to_out.0`` has one."""

    def __init__(self, dim: int, heads: int, head_dim: int, mode: str, grid: bool, block_size: int,
                 use_pe: bool, max_len: int, pe_in_photo: bool):
        super().__init__(dim, heads, head_dim, bias=False)
        self.mode, self.grid, self.block_size = mode, grid and mode == "Temporal", block_size
        self.use_pe, self.max_len, self.pe_in_photo = use_pe, max_len, pe_in_photo

    def forward(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        """``x``: normalised tokens (B*F, h*w, C), frame-major. Returns the same layout."""
        bf, d, c = x.shape
        b = bf // frames
        x = x.view(b, frames, d, c)
        # Global attention always adds the PE; temporal attention may skip it for single images.
        if self.use_pe and (frames > 1 or self.pe_in_photo or self.mode == "Global"):
            if frames > self.max_len:
                raise InputError(f"the motion module takes at most {self.max_len} latent frames but got "
                                 f"{frames}; generate fewer frames.")
            x = x + frame_pos_embed(c, frames, x.device, x.dtype)[None, :, None, :]
        if self.mode == "Global":
            return super().forward(x.reshape(b, frames * d, c)).view(bf, d, c)
        if self.grid:
            n = self.block_size
            if h % n or w % n:
                raise InputError(f"grid motion modules need the latent token grid ({h}x{w}) divisible by "
                                 f"block_size {n}; use a width and height that are multiples of {16 * n} pixels.")
            # (b, f, h', n, w', m, c) -> (b h' w', f n m, c): one aligned n x n cell over all frames.
            x = x.view(b, frames, h // n, n, w // n, n, c).permute(0, 2, 4, 1, 3, 5, 6)
            y = super().forward(x.reshape(b * (h // n) * (w // n), frames * n * n, c))
            y = y.view(b, h // n, w // n, frames, n, n, c).permute(0, 3, 1, 4, 2, 5, 6)
            return y.reshape(bf, d, c)
        if frames == 1:
            return self.value_only(x).view(bf, d, c)
        y = super().forward(x.transpose(1, 2).reshape(b * d, frames, c))
        return y.view(b, d, frames, c).transpose(1, 2).reshape(bf, d, c)


class MotionTransformerBlock(nn.Module):
    """``transformer_blocks.i`` of a motion module: attention blocks with pre-norms, then GEGLU FF."""

    def __init__(self, dim: int, heads: int, head_dim: int, opts: dict):
        super().__init__()
        self.attention_blocks = nn.ModuleList([
            MotionAttention(dim, heads, head_dim, mode, opts["grid"], opts["block_size"],
                            opts["temporal_position_encoding"], opts["temporal_position_encoding_max_len"],
                            not opts["remove_time_embedding_in_photo"])
            for mode in opts["modes"]])
        self.norms = nn.ModuleList([LayerNorm(dim) for _ in opts["modes"]])
        self.ff = FeedForward(dim, gated=True)
        self.ff_norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), frames, h, w) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """``attn_temporal.temporal_transformer``: GroupNorm, proj_in, blocks, proj_out."""

    def __init__(self, channels: int, opts: dict):
        super().__init__()
        heads = opts["num_attention_heads"]
        head_dim = channels // heads // opts["temporal_attention_dim_div"]
        inner = heads * head_dim
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([
            MotionTransformerBlock(inner, heads, head_dim, opts) for _ in range(opts["num_transformer_block"])])
        self.proj_out = Linear(inner, channels)


class MotionModule(nn.Module):
    """One block's motion module (the reference's ``VanillaTemporalModule``) on tokens
    (B*F, h*w, C), frame-major; returns the same layout with the residual added."""

    def __init__(self, channels: int, opts: dict):
        super().__init__()
        if channels % 32:
            raise InputError(f"motion modules use GroupNorm with 32 groups, so the hidden size must be a "
                             f"multiple of 32 but it is {channels}; fix the model config.")
        self.temporal_transformer = TemporalTransformer(channels, opts)
        if opts["zero_initialize"]:
            zero_(self.temporal_transformer.proj_out)
        self.motion_scale = 1.0

    def forward(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        tt = self.temporal_transformer
        # GroupNorm per frame over all its positions; tokens are channel-last, the norm wants (N, C, L).
        y = F.group_norm(x.transpose(1, 2), 32, tt.norm.weight.to(x.dtype), tt.norm.bias.to(x.dtype),
                         tt.norm.eps).transpose(1, 2)
        y = tt.proj_in(y)
        for block in tt.transformer_blocks:
            y = block(y, frames, h, w)
        y = tt.proj_out(y)
        if self.motion_scale != 1.0:
            y = y * self.motion_scale
        return y + x


# ----- standalone motion modules ----------------------------------------------------------------


class MotionModuleSet:
    """A standalone set of motion modules (one per DiT block, the ``easyanimate_v1_mm`` layout:
    ``transformer_blocks.N.attn_temporal.temporal_transformer.*``) with the config it runs with.

    ``state_dict`` holds the tensors (``pos_encoder.pe`` dropped); ``config`` the reference's
    motion keys (``basic_block_type``, ``motion_module_type``, ``motion_module_kwargs[_even|_odd]``);
    ``preset`` the version they came from. :meth:`build` gives the modules as an ``nn.ModuleList``
    (built once and cached) that a model handle can swap into a DiT's blocks.
    """

    def __init__(self, state_dict: dict, config: dict, preset: str, source: str = "the motion module"):
        from ..checkpoints.detect import motion_module_facts

        self.state_dict, self.config, self.preset, self.source = state_dict, config, preset, source
        facts = motion_module_facts(state_dict, source)
        self.hidden_size, self.depth = facts["hidden_size"], facts["depth"]
        self._modules: nn.ModuleList | None = None

    def check_fits(self, hidden_size: int, depth: int) -> None:
        from ..checkpoints import check_motion_module_fits

        check_motion_module_fits(self.state_dict, hidden_size, depth, self.source)

    def options(self, index: int) -> dict:
        c = self.config
        kind = c.get("basic_block_type", MOTION_BLOCKS)
        key = "motion_module_kwargs" if kind != HYBRID_MOTION_BLOCKS else (
            "motion_module_kwargs_even" if index % 2 == 0 else "motion_module_kwargs_odd")
        return motion_options(c.get(key), c.get("motion_module_type", "VanillaGrid"))

    def build(self) -> nn.ModuleList:
        """The modules with their weights (strict load; cached)."""
        if self._modules is None:
            with torch.device("meta"):
                modules = nn.ModuleList([MotionModule(self.hidden_size, self.options(i)) for i in range(self.depth)])
            # transformer_blocks.N.attn_temporal.<rest> -> N.<rest>
            weights = {}
            for key, tensor in self.state_dict.items():
                block, rest = key.split(".attn_temporal.", 1)
                weights[f"{block.rsplit('.', 1)[1]}.{rest}"] = tensor
            result = modules.load_state_dict(weights, strict=False, assign=True)
            if result.missing_keys or result.unexpected_keys:
                bad = (result.missing_keys or result.unexpected_keys)[0]
                raise InputError(f"{self.source} does not fit its config ({bad} is "
                                 f"{'missing' if result.missing_keys else 'unexpected'}); choose the preset "
                                 f"the motion module was trained with.")
            self._modules = modules
        return self._modules


AUTO = "auto"  # no preset: the config stored with the weights, else the version the weights show
RELEASED_WIDTH = 1152  # PixArt-XL-2: the width of every released DiT and motion module
STANDALONE_RELEASE = "v1"  # the only version published as a standalone motion-module file


def load_motion_module(source, config=None, preset: str | None = None) -> MotionModuleSet:
    """A standalone motion-module file (or a full transformer file / folder, whose motion modules
    are taken), or a state dict, with the config it runs with.

    Heads and attention types are invisible in weights. They come from, highest first:

    1. the motion keys of ``config`` when it is a dict (explicit overrides);
    2. the config that travels with the weights (:func:`checkpoints.load_config`: a folder's
       config.json, a loose safetensors file's ``config`` metadata, as ``dit-motion`` and
       ``split-motion-module`` write it), so a file that carries its config always loads as trained;
    3. ``preset`` ("v1", "v2", "v3"; also accepted as ``config="v1"``) for what the file does not
       declare. Without one ("auto", the default): the version the stored config describes; for
       a file that stores none, the version a full transformer's weights show, v1 for a standalone
       file at the released width (the only standalone release), else a guess (logged).
    """
    from ..checkpoints import (
        TRANSFORMER_PRESETS,
        check_finite,
        drop_training_keys,
        extract_motion_module,
        load_config,
        load_state_dict,
    )

    if isinstance(config, str):
        preset, config = config, None
    if preset not in (None, AUTO, *TRANSFORMER_PRESETS):
        raise InputError(f"unknown motion-module preset {preset!r}; expected one of "
                         f"{', '.join((*TRANSFORMER_PRESETS, AUTO))}.")
    name = "the motion module" if isinstance(source, dict) else str(source)
    full = source if isinstance(source, dict) else load_state_dict(source)
    state, _ = drop_training_keys(extract_motion_module(full, name))
    check_finite(state, name)
    declared = None if isinstance(source, dict) else motion_keys(load_config(source))
    if preset in TRANSFORMER_PRESETS:
        version = preset
    elif declared:
        version = motion_version(declared)
    else:
        version, declared = _undeclared_motion_config(full, state, name)
    given = {**(declared or {}), **motion_keys(config)}
    preset_keys = motion_keys(TRANSFORMER_PRESETS[version])
    block_type = given.get("basic_block_type", preset_keys.get("basic_block_type"))
    motion_config = {**_read_by(preset_keys, block_type), **given}
    return MotionModuleSet(state, motion_config, motion_version(motion_config), name)


def _read_by(preset_keys: dict, block_type: str) -> dict:
    """A preset's motion keys without the kwargs entries ``block_type`` does not read: a preset's
    even / odd kwargs left under a declared non-hybrid config would otherwise decide its version."""
    hybrid = block_type == HYBRID_MOTION_BLOCKS
    unused = ("motion_module_kwargs",) if hybrid else ("motion_module_kwargs_even", "motion_module_kwargs_odd")
    return {k: v for k, v in preset_keys.items() if k not in unused}


def save_motion_module(path, state_dict: dict, config: dict) -> None:
    """Write a standalone motion-module file (the ``easyanimate_v1_mm`` layout: only the
    ``transformer_blocks.N.attn_temporal.*`` tensors of ``state_dict``) with the motion keys of
    ``config`` in its metadata, so that it reloads as trained without a preset."""
    import json

    from ..checkpoints import save_state_dict
    from ..checkpoints.io import CONFIG_METADATA_KEY

    declared = motion_keys(config)
    if not declared:
        raise InputError(f"cannot save {path}: the config has no motion-module keys "
                         f"({', '.join(MOTION_CONFIG_KEYS)}); pass the video DiT's config.")
    tensors = {k: v.detach() for k, v in state_dict.items() if ".attn_temporal." in k}
    if not tensors:
        raise InputError(f"cannot save {path}: the state dict has no motion-module tensors "
                         f"(transformer_blocks.N.attn_temporal.*); pass a video DiT's weights.")
    save_state_dict(path, tensors, metadata={CONFIG_METADATA_KEY: json.dumps(declared)})


def _undeclared_motion_config(full: dict, state: dict, name: str) -> tuple:
    """(version, config or None) for motion modules stored without a config: a full transformer's
    detected version, the standalone release at the released width, else a guess from the weights."""
    import logging

    from ..checkpoints.detect import motion_module_facts, transformer_facts

    if len(full) > len(state) and any(k.startswith("transformer_blocks.") and ".attn1." in k for k in full):
        version = transformer_facts(full, name)["version"]
        if version is not None:
            return version, None
    if motion_module_facts(state, name)["hidden_size"] == RELEASED_WIDTH:
        return STANDALONE_RELEASE, None
    guessed = _guessed_motion_config(state, name)
    kwargs = guessed.get("motion_module_kwargs") or guessed["motion_module_kwargs_even"]
    logging.getLogger(__name__).warning(
        "%s carries no motion config (safetensors metadata or a config.json in its folder); guessed temporal "
        "attention, heads: %d. Choose the preset it was trained with if it moves badly.",
        name, kwargs["num_attention_heads"])
    return motion_version(guessed), guessed


def _guessed_motion_config(state: dict, name: str) -> dict:
    """At a width no release has: temporal attention with 64-wide heads (one head when the width
    is not a multiple of 64), the block and attention counts read off the weights."""
    from ..checkpoints.detect import MOTION_PREFIX, motion_module_facts

    facts = motion_module_facts(state, name)
    inner = facts["inner_dim"]

    def kwargs(index: int) -> dict:
        prefix = MOTION_PREFIX.format(index) + "transformer_blocks.0.attention_blocks."
        count = len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})
        return {"num_attention_heads": inner // 64 if inner % 64 == 0 else 1,
                "num_transformer_block": facts["num_transformer_block"],
                "attention_block_types": ["Temporal_Self"] * count,
                "temporal_position_encoding": True,
                "temporal_position_encoding_max_len": facts.get("temporal_position_encoding_max_len", 4096),
                "temporal_attention_dim_div": facts["hidden_size"] // inner}

    even, odd = kwargs(0), kwargs(min(1, facts["depth"] - 1))
    if even == odd:
        return {"basic_block_type": MOTION_BLOCKS, "motion_module_type": "Vanilla", "motion_module_kwargs": even}
    # hybrid modules differ in attention count between even and odd blocks
    return {"basic_block_type": HYBRID_MOTION_BLOCKS, "motion_module_type": "Vanilla",
            "motion_module_kwargs_even": even, "motion_module_kwargs_odd": odd}
