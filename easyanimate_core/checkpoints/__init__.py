"""The one place that knows every published key layout: reading and atomically writing weights,
saying what a file is, converting layouts, config presets and LoRA key normalisation."""

from .convert import (
    check_motion_module_fits,
    convert_pixart_original,
    drop_training_keys,
    expand_input_channels,
    extract_motion_module,
)
from .detect import CheckpointInfo, detect_family, inspect_checkpoint
from .io import check_finite, load_config, load_state_dict, save_state_dict
from .lora_keys import LoraPair, NormalizedLora, lora_state_dict, normalize_lora
from .presets import TRANSFORMER_PRESETS, VAE_PRESETS, resolve_transformer_config, resolve_vae_config

__all__ = [
    "TRANSFORMER_PRESETS",
    "VAE_PRESETS",
    "CheckpointInfo",
    "LoraPair",
    "NormalizedLora",
    "check_finite",
    "check_motion_module_fits",
    "convert_pixart_original",
    "detect_family",
    "drop_training_keys",
    "expand_input_channels",
    "extract_motion_module",
    "inspect_checkpoint",
    "load_config",
    "load_state_dict",
    "lora_state_dict",
    "normalize_lora",
    "resolve_transformer_config",
    "resolve_vae_config",
    "save_state_dict",
]
