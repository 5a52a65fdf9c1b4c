"""What a weights file is: family, version and the config values its keys and shapes fix.

Only names and shapes are read (never values), so detection works on `meta` tensors and on a
safetensors header alone. Families:

    pixart                   PixArt-alpha DiT, diffusers key layout (transformer_blocks.N.attn1 ...)
    pixart_original          PixArt-alpha original .pth layout (x_embedder, blocks.N.attn.qkv ...)
    easyanimate_transformer  the video DiT: PixArt + motion modules (v1), + U-ViT skips (v2),
                             + 12 input channels / CLIP projection (v3)
    motion_module            standalone motion modules (easyanimate_v1_mm.safetensors)
    slice_vae / magvit_vae   v3 / v2 video VAE (same keys; config.json's slice_compression_vae
                             tells them apart; without it: video_vae, version unknown)
    sd_vae                   the 2D SD VAE that v1 runs frame by frame
    lora_kohya / lora_peft / motion_lora   see lora_keys.py
"""

import re
from dataclasses import dataclass, field

from ..errors import CheckpointError
from .convert import convert_pixart_original, describe_dropped, drop_training_keys, is_pixart_original
from .lora_keys import lora_facts, lora_format

_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.")
_MOTION = re.compile(r"^transformer_blocks\.(\d+)\.attn_temporal\.")
MOTION_PREFIX = "transformer_blocks.{}.attn_temporal.temporal_transformer."

HEADS_NOTE = (
    "attention heads and attention types (VanillaGrid 2x2 cells / temporal / global) are "
    "not visible in weights: they come from config.json or the {} preset"
)


@dataclass
class CheckpointInfo:
    family: str
    version: str | None
    config: dict
    notes: list = field(default_factory=list)
    dropped_keys: list = field(default_factory=list)
    source: str = "the state dict"
    num_tensors: int = 0

    def report(self) -> str:
        """Human-readable summary (the `inspect` command prints this)."""
        lines = [
            f"{self.source}",
            f"  family:  {self.family}",
            f"  version: {self.version or 'unknown'}",
            f"  tensors: {self.num_tensors}",
        ]
        lines += [f"  {key}: {value}" for key, value in self.config.items()]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def inspect_checkpoint(path_or_state_dict, config=None, subfolder=None) -> CheckpointInfo:
    """Identify a weights file, model folder or state dict (shapes only, values never read)."""
    from .io import load_config, load_state_dict, weights_file

    if isinstance(path_or_state_dict, dict):
        state_dict, source = path_or_state_dict, "the state dict"
    else:
        source = str(weights_file(path_or_state_dict, subfolder))
        state_dict = load_state_dict(path_or_state_dict, subfolder, device="meta")
        if config is None:
            config = load_config(path_or_state_dict, subfolder)
    if not state_dict:
        raise CheckpointError(f"{source} holds no tensors; expected model or LoRA weights.")
    family = detect_family(state_dict, source)
    kept, dropped = drop_training_keys(state_dict)
    info = CheckpointInfo(
        family=family,
        version=None,
        config={},
        notes=describe_dropped(dropped),
        dropped_keys=dropped,
        source=source,
        num_tensors=len(state_dict),
    )
    if family in ("pixart", "pixart_original", "easyanimate_transformer"):
        _describe_transformer(info, state_dict, config)
    elif family == "motion_module":
        _describe_motion_module(info, state_dict, config)
    elif family == "video_vae":
        _describe_vae(info, kept, config)
    elif family == "sd_vae":
        info.version = "v1"
        info.config = sd_vae_facts(kept, source)
    else:
        if not isinstance(path_or_state_dict, dict):
            # alphas are the only values a report needs: read just those few scalars
            alphas = [k for k in state_dict if k.endswith(".alpha")]
            state_dict = {**state_dict, **load_state_dict(path_or_state_dict, subfolder, keys=alphas)}
        info.config = lora_facts(state_dict)
    return info


def detect_family(state_dict, source="the state dict") -> str:
    keys = list(state_dict)
    lora = lora_format(keys)
    if lora:
        return lora
    if is_pixart_original(keys):
        return "pixart_original"
    if any(_BLOCK.match(k) and ".attn1." in k for k in keys):
        return (
            "easyanimate_transformer"
            if any("attn_temporal" in k or k.startswith("long_connect_fc.") for k in keys)
            else "pixart"
        )
    kept, _ = drop_training_keys(state_dict)
    if kept and all(_MOTION.match(k) for k in keys):
        return "motion_module"
    if "encoder.conv_in.weight" in kept:
        return "video_vae" if state_dict["encoder.conv_in.weight"].ndim == 5 else "sd_vae"
    raise CheckpointError(
        f"{source} has an unknown key layout (first keys: {', '.join(keys[:3])}); "
        f"expected a PixArt / EasyAnimate transformer, motion module, video VAE or "
        f"LoRA{_layout_hint(keys)}."
    )


def _layout_hint(keys):
    if any("motion_modules." in k for k in keys):
        return " - this looks like an AnimateDiff UNet motion module, which does not fit a DiT"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return " - this looks like a Stable Diffusion / ComfyUI UNet checkpoint"
    if any("lora" in k.lower() for k in keys):
        return " - it has LoRA-like names but none of the kohya, PEFT or processor layouts"
    return ""


# ----------------------------------------------------------------------------- transformers

_TOP_REQUIRED = (
    "pos_embed.proj.weight",
    "proj_out.weight",
    "scale_shift_table",
    "adaln_single.linear.weight",
    "adaln_single.emb.timestep_embedder.linear_1.weight",
    "adaln_single.emb.timestep_embedder.linear_2.weight",
    "caption_projection.linear_1.weight",
    "caption_projection.linear_2.weight",
)
_BLOCK_REQUIRED = (
    "scale_shift_table",
    "attn1.to_q.weight",
    "attn1.to_k.weight",
    "attn1.to_v.weight",
    "attn1.to_out.0.weight",
    "attn2.to_q.weight",
    "attn2.to_k.weight",
    "attn2.to_v.weight",
    "attn2.to_out.0.weight",
    "ff.net.0.proj.weight",
    "ff.net.2.weight",
)


def transformer_facts(state_dict, source="the state dict") -> dict:
    """Everything the weights of a PixArt / EasyAnimate transformer fix (either key layout),
    after checking that the required keys exist and that the shapes agree with each other."""
    if is_pixart_original(list(state_dict)):
        state_dict = convert_pixart_original(state_dict, source)
    _require(state_dict, _TOP_REQUIRED, source, "transformer")
    depth = _count_indices(state_dict, _BLOCK, source, "transformer_blocks")
    _require(
        state_dict,
        [f"transformer_blocks.{i}.{k}" for i in range(depth) for k in _BLOCK_REQUIRED],
        source,
        "transformer",
    )
    patch_embed = state_dict["pos_embed.proj.weight"]
    hidden, in_channels, patch = patch_embed.shape[0], patch_embed.shape[1], patch_embed.shape[-1]
    cross = state_dict["transformer_blocks.0.attn2.to_k.weight"].shape[1]
    ff_inner = state_dict["transformer_blocks.0.ff.net.0.proj.weight"].shape[0]
    expected = {
        "scale_shift_table": (2, hidden),
        "adaln_single.linear.weight": (6 * hidden, hidden),
        "caption_projection.linear_2.weight": (hidden, hidden),
    }
    for i in range(depth):
        block = f"transformer_blocks.{i}."
        expected.update(
            {block + "scale_shift_table": (6, hidden), block + "ff.net.0.proj.weight": (ff_inner, hidden)}
        )
        for name in (
            "attn1.to_q",
            "attn1.to_k",
            "attn1.to_v",
            "attn1.to_out.0",
            "attn2.to_q",
            "attn2.to_out.0",
        ):
            expected[f"{block}{name}.weight"] = (hidden, hidden)
        for name in ("attn2.to_k", "attn2.to_v"):
            expected[f"{block}{name}.weight"] = (hidden, cross)
    skips = _count_indices(state_dict, re.compile(r"^long_connect_fc\.(\d+)\."), source, "long_connect_fc")
    expected.update({f"long_connect_fc.{i}.weight": (hidden, hidden) for i in range(skips)})
    _check_shapes(state_dict, expected, source)
    proj_out = state_dict["proj_out.weight"]
    if proj_out.shape[1] != hidden or proj_out.shape[0] % (patch * patch):
        raise CheckpointError(
            f"{source} has proj_out.weight of shape {list(proj_out.shape)}, expected "
            f"[k*{patch * patch}, {hidden}] for hidden size {hidden} and patch size {patch}."
        )
    clip = state_dict.get("clip_projection.linear_1.weight")
    motion_blocks = sorted({int(m.group(1)) for m in map(_MOTION.match, state_dict) if m})
    facts = {
        "hidden_size": hidden,
        "depth": depth,
        "in_channels": in_channels,
        "out_channels": proj_out.shape[0] // (patch * patch),
        "patch_size": patch,
        "caption_channels": state_dict["caption_projection.linear_1.weight"].shape[1],
        "cross_attention_dim": cross,
        "ff_inner_dim": ff_inner,
        "attention_bias": "transformer_blocks.0.attn1.to_q.bias" in state_dict,
        "uvit": skips > 0,
        "uvit_skips": skips,
        "clip_projection": clip is not None,
        "motion_module": bool(motion_blocks),
        "motion_module_blocks": len(motion_blocks),
        "additional_conditions": "adaln_single.emb.resolution_embedder.linear_1.weight" in state_dict,
    }
    if clip is not None:
        facts["clip_channels"] = clip.shape[1]
        facts["clip_tokens"] = clip.shape[0] // hidden
    if motion_blocks:
        if motion_blocks != list(range(depth)):
            missing = sorted(set(range(depth)) - set(motion_blocks))
            raise CheckpointError(
                f"{source} has motion modules in {len(motion_blocks)} of {depth} blocks "
                f"(missing in blocks {missing[:5]}); expected one in every block."
            )
        mm = motion_module_facts({k: v for k, v in state_dict.items() if "attn_temporal" in k}, source)
        if mm["hidden_size"] != hidden:
            raise CheckpointError(
                f"{source} has motion modules of hidden size {mm['hidden_size']} in a DiT "
                f"of hidden size {hidden}; the file mixes two models."
            )
        facts["temporal_position_encoding_max_len"] = mm.get("temporal_position_encoding_max_len")
    facts["version"] = transformer_version(facts)
    return facts


def transformer_version(facts, config=None) -> str | None:
    """v3 = 12 input channels and/or CLIP projection. Otherwise a config that declares motion
    modules says it (v1 grid, v2 temporal, v3 hybrid: see ``presets.motion_version``); from the
    weights alone: v2 = motion modules and U-ViT skips, v1 = motion modules without skips
    (VanillaGrid); an image DiT (no motion modules, skips or not) has no version."""
    from .presets import IMAGE_BLOCKS, motion_keys, motion_version

    if facts["in_channels"] == 12 or facts["clip_projection"]:
        return "v3"
    declared = motion_keys(config)
    if declared and declared.get("basic_block_type") != IMAGE_BLOCKS:
        return motion_version(declared)
    if not facts["motion_module"]:
        return None
    return "v2" if facts["uvit"] else "v1"


def _describe_transformer(info, state_dict, config):
    from .presets import motion_keys

    facts = transformer_facts(state_dict, info.source)
    facts.pop("version")
    info.version = transformer_version(facts, config)
    if info.family == "pixart_original":
        info.notes.append(
            "original PixArt layout: fused qkv / kv weights are split into to_q/to_k/to_v "
            "on load; the fixed pos_embed buffer and the learned null caption y_embedding "
            "are dropped (EasyAnimate encodes the negative prompt with T5 instead)"
        )
    info.config = {k: v for k, v in facts.items() if v is not None}
    if config is not None:
        for key in (
            "num_attention_heads",
            "attention_head_dim",
            "basic_block_type",
            "motion_module_type",
            "enable_uvit",
            "sample_size",
        ):
            if key in config:
                info.config[key] = config[key]
    preset = info.version or "v1"
    if config is None or "num_attention_heads" not in config:
        info.notes.append(HEADS_NOTE.format(preset))
    if info.version == "v1" and info.family == "easyanimate_transformer" and not motion_keys(config):
        info.notes.append("v1: motion modules without U-ViT skips (VanillaGrid)")
    if not facts["motion_module"]:
        info.notes.append(
            "an image DiT without motion modules: pair it with a motion module (e.g. easyanimate_v1_mm) for video"
        )
    if facts["in_channels"] == 12 and not facts["clip_projection"]:
        info.notes.append("12 input channels but no clip_projection: image prompts cannot be used")


# ----------------------------------------------------------------------------- motion modules


def _describe_motion_module(info, state_dict, config):
    from .presets import motion_keys, motion_version

    info.config = motion_module_facts(state_dict, info.source)
    declared = motion_keys(config)
    if declared:
        info.version = motion_version(declared)
        info.config.update(declared)
        info.notes.append("the motion config travels with the weights; the loaders use it")
        return
    info.version = "v1"
    info.notes.append(
        "standalone motion modules were published for v1 only; v2/v3 modules have the "
        "same keys, so the attention type comes from the preset (v1: VanillaGrid)"
    )
    info.notes.append(HEADS_NOTE.format("v1"))


def motion_module_facts(state_dict, source="the state dict") -> dict:
    """Hidden size, depth, layer counts and PE length of motion modules
    (transformer_blocks.N.attn_temporal.temporal_transformer.*), with a completeness check."""
    depth = _count_indices(state_dict, _MOTION, source, "motion-module blocks")
    if depth == 0:
        raise CheckpointError(f"{source} has no motion-module keys (transformer_blocks.N.attn_temporal.*).")
    first = MOTION_PREFIX.format(0)
    inner = _count_indices(
        state_dict,
        re.compile(re.escape(first) + r"transformer_blocks\.(\d+)\."),
        source,
        "motion-module transformer blocks",
    )
    attention = _count_indices(
        state_dict,
        re.compile(re.escape(first) + r"transformer_blocks\.0\.attention_blocks\.(\d+)\."),
        source,
        "motion-module attention blocks",
    )
    required = [
        "norm.weight",
        "norm.bias",
        "proj_in.weight",
        "proj_in.bias",
        "proj_out.weight",
        "proj_out.bias",
    ]
    for j in range(inner):
        tb = f"transformer_blocks.{j}."
        required += [
            tb + p for p in ("ff.net.0.proj.weight", "ff.net.2.weight", "ff_norm.weight", "ff_norm.bias")
        ]
        for a in range(attention):
            required += [f"{tb}attention_blocks.{a}.{p}.weight" for p in ("to_q", "to_k", "to_v", "to_out.0")]
            required += [f"{tb}norms.{a}.weight"]
    _require(
        state_dict,
        [MOTION_PREFIX.format(i) + k for i in range(depth) for k in required],
        source,
        "motion module",
    )
    proj_in = state_dict[first + "proj_in.weight"]
    hidden, inner_dim = proj_in.shape[1], proj_in.shape[0]
    expected = {}
    for i in range(depth):
        block = MOTION_PREFIX.format(i)
        expected[block + "proj_in.weight"] = (inner_dim, hidden)
        expected[block + "proj_out.weight"] = (hidden, inner_dim)
        for j in range(inner):
            for a in range(attention):
                for p in ("to_q", "to_k", "to_v", "to_out.0"):
                    expected[f"{block}transformer_blocks.{j}.attention_blocks.{a}.{p}.weight"] = (
                        inner_dim,
                        inner_dim,
                    )
    _check_shapes(state_dict, expected, source)
    facts = {
        "hidden_size": hidden,
        "depth": depth,
        "inner_dim": inner_dim,
        "num_transformer_block": inner,
        "attention_blocks": attention,
        "ff_inner_dim": state_dict[first + "transformer_blocks.0.ff.net.2.weight"].shape[1],
    }
    pe = state_dict.get(first + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe")
    if pe is not None:
        facts["temporal_position_encoding_max_len"] = pe.shape[1]
    return facts


# ----------------------------------------------------------------------------- VAEs

_VAE_REQUIRED = (
    "encoder.conv_in.weight",
    "encoder.conv_out.weight",
    "decoder.conv_in.weight",
    "decoder.conv_out.weight",
    "quant_conv.weight",
    "post_quant_conv.weight",
)


def vae_facts(state_dict, source="the state dict") -> dict:
    """Channels, channel multipliers, latent channels and layers per block of the video VAE."""
    state_dict, _ = drop_training_keys(state_dict)
    _require(state_dict, _VAE_REQUIRED, source, "video VAE")
    conv_in = state_dict["encoder.conv_in.weight"]
    if conv_in.ndim != 5:
        raise CheckpointError(
            f"{source} has a {conv_in.ndim - 2}D encoder.conv_in, expected the 3D "
            f"(5-dimensional) convolutions of the EasyAnimate video VAE."
        )
    ch = conv_in.shape[0]
    levels = _count_indices(
        state_dict, re.compile(r"^encoder\.down_blocks\.(\d+)\."), source, "encoder down blocks"
    )
    up_levels = _count_indices(
        state_dict, re.compile(r"^decoder\.up_blocks\.(\d+)\."), source, "decoder up blocks"
    )
    if levels == 0 or up_levels != levels:
        raise CheckpointError(
            f"{source} has {levels} encoder down blocks and {up_levels} decoder up blocks, "
            f"expected the same non-zero number."
        )
    layers = _count_indices(
        state_dict, re.compile(r"^encoder\.down_blocks\.0\.convs\.(\d+)\."), source, "layers"
    )
    ch_mult = []
    for i in range(levels):
        key = f"encoder.down_blocks.{i}.convs.{layers - 1}.conv2.weight"
        _require(state_dict, [key], source, "video VAE")
        out = state_dict[key].shape[0]
        if out % ch:
            raise CheckpointError(
                f"{source} has {out} channels in down block {i}, not a multiple of the {ch} base channels."
            )
        ch_mult.append(out // ch)
    latent = state_dict["decoder.conv_in.weight"].shape[1]
    expected = {
        "encoder.conv_out.weight": (2 * latent, ch * ch_mult[-1], *conv_in.shape[2:]),
        "quant_conv.weight": (2 * latent, 2 * latent, 1, 1, 1),
        "post_quant_conv.weight": (latent, latent, 1, 1, 1),
    }
    _check_shapes(state_dict, expected, source)
    facts = {
        "in_channels": conv_in.shape[1],
        "out_channels": state_dict["decoder.conv_out.weight"].shape[0],
        "ch": ch,
        "ch_mult": ch_mult,
        "latent_channels": latent,
        "layers_per_block": layers,
    }
    if layers > 1:  # the mid block holds layers_per_block - 1 attentions: with one, the flag leaves no trace
        facts["mid_block_use_attention"] = "encoder.mid_block.attentions.0.to_q.weight" in state_dict
    return facts


def _describe_vae(info, state_dict, config):
    info.config = vae_facts(state_dict, info.source)
    if config is None:
        info.family = "video_vae"
        info.notes.append(
            "slice (v3) and MagViT (v2) VAEs have identical weights and no config.json came "
            "with this file: choose the preset (v3 slice or v2 MagViT) when loading"
        )
        return
    slice_mode = bool(config.get("slice_compression_vae", False))
    info.family, info.version = ("slice_vae", "v3") if slice_mode else ("magvit_vae", "v2")
    if "slice_compression_vae" not in config:
        info.notes.append(
            "config.json has no slice_compression_vae: the class default (False, MagViT) applies"
        )
    for key in ("slice_compression_vae", "mini_batch_encoder", "mini_batch_decoder", "scaling_factor"):
        if key in config:
            info.config[key] = config[key]


def sd_vae_facts(state_dict, source="the state dict") -> dict:
    """The 2D SD VAE (diffusers AutoencoderKL) that v1 applies per frame."""
    _require(state_dict, _VAE_REQUIRED, source, "SD VAE")
    levels = _count_indices(
        state_dict, re.compile(r"^encoder\.down_blocks\.(\d+)\."), source, "encoder down blocks"
    )
    block_out = []
    for i in range(levels):
        key = f"encoder.down_blocks.{i}.resnets.1.conv2.weight"
        _require(state_dict, [key], source, "SD VAE")
        block_out.append(state_dict[key].shape[0])
    return {"block_out_channels": block_out, "latent_channels": state_dict["decoder.conv_in.weight"].shape[1]}


# ----------------------------------------------------------------------------- helpers


def _count_indices(state_dict, pattern, source, what) -> int:
    """Number of numbered sub-modules; a gap in the numbering means keys are missing."""
    found = sorted({int(m.group(1)) for m in map(pattern.match, state_dict) if m})
    if found and found != list(range(len(found))):
        missing = sorted(set(range(found[-1] + 1)) - set(found))
        raise CheckpointError(
            f"{source} is missing required keys: {what} {missing[:5]} are absent "
            f"(found {len(found)} of {found[-1] + 1}); the file is incomplete."
        )
    return len(found)


def _require(state_dict, keys, source, what):
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"{source} is missing required keys of a {what}: {', '.join(missing[:3])}"
            f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}; the file is "
            f"incomplete or not a {what}."
        )


def _check_shapes(state_dict, expected, source):
    for key, shape in expected.items():
        found = tuple(state_dict[key].shape) if key in state_dict else None
        if found is not None and found != tuple(shape):
            raise CheckpointError(
                f"{source} has a shape mismatch: {key} is {list(found)}, expected "
                f"{list(shape)} for the sizes the other weights give."
            )


# ----------------------------------------------------------------------------- what loads a path

# Loader tags (:func:`loadable_as`): which of the pack's loaders can take a file or folder.
DIT, MOTION_MODULE, VAE, T5, CLIP_VISION = "dit", "motion_module", "vae", "t5", "clip_vision"
LORA, MOTION_LORA, DOMAIN_ADAPTER = "lora", "motion_lora", "domain_adapter"
_CONFIG_MODEL_TYPES = {"t5": T5, "clip_vision_model": CLIP_VISION}
_T5_ANCHOR = "encoder.final_layer_norm.weight"
_loadable_cache: dict = {}


def loadable_as(path) -> frozenset:
    """The loaders that can take ``path`` (tags above): read from config.json's model_type and the
    key names of a safetensors header / weights-only file, never the values, and cached until a
    file it depends on changes (mtime or size). Unreadable or unknown files load nowhere (logged
    once per change)."""
    import logging
    import os
    from pathlib import Path

    path = Path(path)
    stamp = _stamp(path)
    cached = _loadable_cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        tags = _loadable_as(path)
    except (CheckpointError, OSError, ValueError) as error:
        logging.getLogger(__name__).warning("%s is not listed by any loader: %s", path, error)
        tags = frozenset()
    if len(_loadable_cache) > 4096:  # models come and go; never grow without bound
        _loadable_cache.clear()
    _loadable_cache[os.fspath(path)] = (stamp, tags)
    return tags


def _stamp(path) -> tuple:
    """What a cached answer depends on: the file itself, or every file directly in the folder."""
    import os

    if path.is_file():
        info = path.stat()
        return ((path.name, info.st_mtime_ns, info.st_size),)
    with os.scandir(path) as entries:
        return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries if e.is_file()))


def _loadable_as(path) -> frozenset:
    import json

    from .io import load_state_dict, transformers_weight_files

    if path.is_dir() and (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        tag = _CONFIG_MODEL_TYPES.get(config.get("model_type")) if isinstance(config, dict) else None
        if tag is not None:
            return frozenset((tag,)) if transformers_weight_files(path) else frozenset()
    state = load_state_dict(path, device="meta")
    keys = list(state)
    if any(k.endswith(_T5_ANCHOR) for k in keys) and any(".SelfAttention." in k for k in keys):
        return frozenset((T5,))
    family = detect_family(state, str(path)) if keys else None
    if family in ("pixart", "pixart_original", "easyanimate_transformer"):
        return frozenset((DIT, MOTION_MODULE)) if any("attn_temporal" in k for k in keys) else frozenset((DIT,))
    if family == "motion_module":
        return frozenset((MOTION_MODULE,))
    if family == "video_vae":
        return frozenset((VAE,))
    if family in ("lora_kohya", "lora_peft", "motion_lora"):
        targets = [k for k in keys if not k.startswith("lora_te") and not k.endswith(".alpha")]
        if targets and all("attn_temporal" in k for k in targets):
            return frozenset((LORA, MOTION_LORA))
        if targets and all(("attn1" in k or "attn2" in k) and "attn_temporal" not in k for k in targets):
            return frozenset((LORA, DOMAIN_ADAPTER))
        return frozenset((LORA,))
    return frozenset()
