"""Named configurations v1 / v2 / v3 and the rule that turns weights (+ optional config.json) into
a full model config.

Weights fix the shapes (hidden size, depth, channels, U-ViT skips); they do not show the number of
attention heads, the attention types of the motion modules (grid / temporal / global) or the grid
block size. Those come from config.json when the model folder has one, otherwise from the preset
of the detected version. The dicts use the reference's key names (diffusers PixArt config.json +
the shipped yaml's `transformer_additional_kwargs` / VAE constructor kwargs), so a released
config.json drops in unchanged.
"""

import copy

from ..errors import CheckpointError

# PixArt-XL-2-512x512 transformer/config.json (the base of every version).
_PIXART_XL_2_512 = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "attention_type": "default",
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 64,
    "upcast_attention": False,
    "use_linear_projection": False,
}


# ``basic_block_type`` values, spelled as the released config.json files spell them.
IMAGE_BLOCKS = "basic"  # no motion modules: the PixArt image model
MOTION_BLOCKS = "motionmodule"  # the same motion module config (motion_module_kwargs) in every block
# The paper's hybrid motion module (v3), which the reference code calls "global_motionmodule":
# even blocks attend over time (motion_module_kwargs_even), odd blocks over time and then globally
# over every token of every frame (motion_module_kwargs_odd).
HYBRID_MOTION_BLOCKS = "global_motionmodule"
BLOCK_TYPES = (IMAGE_BLOCKS, MOTION_BLOCKS, HYBRID_MOTION_BLOCKS)
# The config keys that describe the motion modules (what a standalone motion-module file carries).
MOTION_CONFIG_KEYS = ("basic_block_type", "motion_module_type", "motion_module_kwargs",
                      "motion_module_kwargs_even", "motion_module_kwargs_odd")


def motion_keys(config: dict | None) -> dict:
    """The motion-module part of a transformer config (empty when there is none)."""
    return {k: v for k, v in (config or {}).items() if k in MOTION_CONFIG_KEYS}


def motion_version(config: dict) -> str:
    """The version a motion config describes: v1 for grid attention (VanillaGrid), v3 for the
    hybrid modules (global attention, Global_Self), else v2 (temporal)."""
    if config.get("motion_module_type") == "VanillaGrid":
        return "v1"
    attention_types = [kind for key, kwargs in config.items() if key.startswith("motion_module_kwargs")
                       for kind in (kwargs or {}).get("attention_block_types", ())]
    hybrid = config.get("basic_block_type") == HYBRID_MOTION_BLOCKS or "Global_Self" in attention_types
    return "v3" if hybrid else "v2"


def _motion_kwargs(heads, block_size, attention_block_types, **extra):
    return {
        "num_attention_heads": heads,
        "num_transformer_block": 1,
        "attention_block_types": list(attention_block_types),
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 4096,
        "temporal_attention_dim_div": 1,
        "block_size": block_size,
        **extra,
    }


_COMMON_3D = {
    "patch_3d": False,
    "fake_3d": False,
    "time_position_encoding_before_transformer": False,
}

TRANSFORMER_PRESETS = {
    # v1: PixArt + VanillaGrid motion module (2x2 cells across frames) in every block, no skips.
    # The v1 yaml has no enable_uvit key (the class default is False); it is spelled out here.
    "v1": {
        **_PIXART_XL_2_512,
        **_COMMON_3D,
        "basic_block_type": MOTION_BLOCKS,
        "motion_module_type": "VanillaGrid",
        "enable_uvit": False,
        "motion_module_kwargs": _motion_kwargs(8, 2, ["Temporal_Self", "Temporal_Self"]),
    },
    # v2: temporal motion module, U-ViT long skips, full fine-tune.
    "v2": {
        **_PIXART_XL_2_512,
        **_COMMON_3D,
        "basic_block_type": MOTION_BLOCKS,
        "motion_module_type": "Vanilla",
        "enable_uvit": True,
        "motion_module_kwargs": _motion_kwargs(8, 1, ["Temporal_Self", "Temporal_Self"]),
    },
    # v3 InP: 12 input channels (+ CLIP projection), 16-head hybrid motion modules: odd blocks
    # attend globally over all frames' tokens in their second attention.
    "v3": {
        **_PIXART_XL_2_512,
        **_COMMON_3D,
        "in_channels": 12,
        "basic_block_type": HYBRID_MOTION_BLOCKS,
        "motion_module_type": "Vanilla",
        "enable_uvit": True,
        "motion_module_kwargs_even": _motion_kwargs(
            16, 1, ["Temporal_Self", "Temporal_Self"], remove_time_embedding_in_photo=False
        ),
        "motion_module_kwargs_odd": _motion_kwargs(
            16, 1, ["Temporal_Self", "Global_Self"], remove_time_embedding_in_photo=False
        ),
    },
}

# AutoencoderKLMagvit's constructor defaults with the block types of the shipped yamls.
VAE_CLASS_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "use_gc_blocks": None,
    "down_block_types": [
        "SpatialDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
        "SpatialTemporalDownBlock3D",
    ],
    "up_block_types": [
        "SpatialUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
        "SpatialTemporalUpBlock3D",
    ],
    "mid_block_type": "MidBlock3D",
    "mid_block_use_attention": True,
    "mid_block_attention_type": "3d",
    "mid_block_num_attention_heads": 1,
    "layers_per_block": 2,
    "act_fn": "silu",
    "num_attention_heads": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.1825,
    "use_tiling": False,
}

VAE_PRESETS = {
    # v2: causal MagViT VAE, run by the pipeline in 9-frame / 3-latent chunks.
    "v2": {
        **VAE_CLASS_DEFAULTS,
        "slice_compression_vae": False,
        "mini_batch_encoder": 9,
        "mini_batch_decoder": 3,
    },
    # v3: slice VAE, 8-frame slices encoded independently, 2-latent slices decoded with context.
    "v3": {
        **VAE_CLASS_DEFAULTS,
        "slice_compression_vae": True,
        "mini_batch_encoder": 8,
        "mini_batch_decoder": 2,
    },
}


def _preset(presets, name, kind):
    if name not in presets:
        raise CheckpointError(f"unknown {kind} preset {name!r}; expected one of {', '.join(presets)}.")
    return copy.deepcopy(presets[name])


def resolve_transformer_config(state_dict, config=None, preset=None, overrides=None, source=None) -> dict:
    """Full transformer config: the preset (given, else the version the config or the weights
    show, see ``detect.transformer_version``; a plain PixArt base defaults to v1, the version that pairs it with a separate motion module), then the
    values the weights fix, then config.json if given (it must agree with the weights; a larger
    in_channels is allowed, the loader zero-pads), then `overrides`, which win over everything."""
    from .config_fields import TRANSFORMER_FIELDS, check_fields
    from .detect import transformer_facts, transformer_version

    for given, where in ((config, f"{source or 'the model'} config"), (overrides, "config override")):
        if given is not None:
            check_fields(given, TRANSFORMER_FIELDS, where)
    facts = transformer_facts(state_dict, source)
    name = preset or transformer_version(facts, {**(config or {}), **(overrides or {})}) or "v1"
    resolved = _preset(TRANSFORMER_PRESETS, name, "transformer")
    heads = next(
        source_dict["num_attention_heads"]
        for source_dict in (overrides or {}, config or {}, resolved)
        if "num_attention_heads" in source_dict
    )
    inferred = _weight_determined_transformer_config(facts, heads)
    resolved.update(inferred)
    if config is not None:
        _check_agreement(config, inferred, source, expandable=("in_channels",))
        resolved.update(copy.deepcopy(config))
    resolved.update(copy.deepcopy(overrides or {}))
    hidden = facts["hidden_size"]
    if resolved["num_attention_heads"] * resolved["attention_head_dim"] != hidden:
        raise CheckpointError(
            f"{source or 'the transformer'} has hidden size {hidden}, which "
            f"{resolved['num_attention_heads']} heads x {resolved['attention_head_dim']} does not give; "
            f"override num_attention_heads and attention_head_dim so their product is {hidden}."
        )
    return resolved


def _weight_determined_transformer_config(facts, heads):
    hidden = facts["hidden_size"]
    if hidden % heads:
        raise CheckpointError(
            f"hidden size {hidden} is not divisible by the preset's {heads} heads; "
            f"override num_attention_heads with a divisor of {hidden}."
        )
    inferred = {
        "num_attention_heads": heads,
        "attention_head_dim": hidden // heads,
        "num_layers": facts["depth"],
        "in_channels": facts["in_channels"],
        "out_channels": facts["out_channels"],
        "patch_size": facts["patch_size"],
        "caption_channels": facts["caption_channels"],
        "cross_attention_dim": facts["cross_attention_dim"],
        "attention_bias": facts["attention_bias"],
        "enable_uvit": facts["uvit"],
    }
    if facts["additional_conditions"]:
        inferred["sample_size"] = 128  # diffusers turns resolution/aspect embedders on only at 128
    return inferred


def resolve_vae_config(state_dict, config=None, preset=None, overrides=None, source=None) -> dict:
    """Full VAE config: the preset (given, else chosen by config.json's slice_compression_vae),
    then the shapes the weights fix, then config.json (it must agree with them), then `overrides`.
    Slice (v3) and MagViT (v2) VAEs have identical weights, so without config.json a preset is
    required."""
    from .detect import vae_facts

    facts = vae_facts(state_dict, source)
    if preset is None and config is None:
        raise CheckpointError(
            f"{source or 'this VAE'} has no config.json and slice (v3) and MagViT (v2) VAEs have "
            f"identical weights; choose preset='v3' (slice VAE) or preset='v2' (MagViT)."
        )
    if preset is None:
        preset = "v3" if config.get("slice_compression_vae", False) else "v2"
    resolved = _preset(VAE_PRESETS, preset, "VAE")
    inferred = {
        key: facts[key]
        for key in (
            "in_channels",
            "out_channels",
            "ch",
            "ch_mult",
            "latent_channels",
            "layers_per_block",
            "mid_block_use_attention",
        )
        if key in facts
    }
    resolved.update(inferred)
    # Spatial and spatio-temporal down/up samplers have the same weight shapes: keep the preset's
    # pattern (first level spatial only, the rest spatio-temporal) at the depth the weights have.
    # config.json's own block types (lists, or the reference's tuple strings) then replace these.
    levels = len(resolved["ch_mult"])
    for key in ("down_block_types", "up_block_types"):
        resolved[key] = resolved[key][:1] + resolved[key][-1:] * (levels - 1)
    if config is not None:
        _check_agreement(config, inferred, source)
        resolved.update(copy.deepcopy(config))
    resolved.update(copy.deepcopy(overrides or {}))
    return resolved


def _check_agreement(config, inferred, source, expandable=()):
    for key, value in inferred.items():
        if key not in config or config[key] == value:
            continue
        if key in expandable and isinstance(value, int) and value < config[key]:
            continue  # the loader zero-pads extra input channels, as the reference does
        raise CheckpointError(
            f"{source or 'the weights'} do not match config.json: {key} is "
            f"{config[key]!r} in the config but the weights have {value!r}; use the "
            f"config.json that came with these weights."
        )
