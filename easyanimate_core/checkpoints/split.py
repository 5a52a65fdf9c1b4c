"""Split a video DiT into its image base and a standalone motion module (one motion module, many
bases: the EasyAnimate v1 / AnimateDiff way of shipping motion).

    python training/run.py split-motion-module <transformer folder> --base <folder> --motion-module <file>

The base folder is a PixArt-style ``config.json`` (the motion keys removed) plus
``diffusion_pytorch_model.safetensors`` with every tensor but the motion modules; the motion
module file holds the ``transformer_blocks.N.attn_temporal.*`` tensors with the motion config in
its metadata. Tensors are copied as stored (same dtype, same values), so
``load_transformer(base, motion_module=file)`` rebuilds the original model exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import CheckpointError, InputError

BASE_WEIGHTS = "diffusion_pytorch_model.safetensors"


def split_motion_module(transformer, base_folder, motion_file) -> tuple[Path, Path]:
    """Write ``base_folder`` (config.json + weights) and ``motion_file`` from the video DiT at
    ``transformer`` (a ``transformer/`` folder or a model folder holding one). Returns both paths."""
    from ..models.motion_module import save_motion_module
    from .io import load_config, load_state_dict, save_state_dict
    from .presets import MOTION_CONFIG_KEYS, motion_keys

    source = Path(transformer)
    if source.is_dir() and (source / "transformer").is_dir():
        source = source / "transformer"
    base_folder, motion_file = Path(base_folder), Path(motion_file)
    if motion_file.suffix != ".safetensors":
        raise InputError(f"the motion module file {motion_file} must end in .safetensors; rename it.")
    if base_folder.resolve() == Path(source).resolve() or Path(source).resolve() in motion_file.resolve().parents:
        raise InputError(f"split {source} into another folder: --base and --motion-module must not overwrite the "
                         f"model being split")
    config = load_config(source)
    if not motion_keys(config):
        raise CheckpointError(f"{source} has no motion-module config (config.json with basic_block_type and "
                              f"motion_module_kwargs*); split a video DiT folder, not a loose file or an image DiT.")
    state = load_state_dict(source)
    motion = {k: v for k, v in state.items() if ".attn_temporal." in k}
    if not motion:
        raise CheckpointError(f"{source} has no motion-module weights (transformer_blocks.N.attn_temporal.*); "
                              f"it is an image DiT already.")
    base_folder.mkdir(parents=True, exist_ok=True)
    motion_file.parent.mkdir(parents=True, exist_ok=True)
    base_config = {k: v for k, v in config.items() if k not in MOTION_CONFIG_KEYS}
    save_state_dict(base_folder / BASE_WEIGHTS, {k: v for k, v in state.items() if k not in motion})
    (base_folder / "config.json").write_text(json.dumps(base_config, indent=2) + "\n")
    save_motion_module(motion_file, motion, config)
    return base_folder, motion_file


def main(command: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"run.py {command}",
        description="Split a video DiT into an image base folder and a standalone motion-module file "
                    "(with its config in the file's metadata). The two reload as the original model: "
                    "load_transformer(base, motion_module=file), or Load DiT + Load/Apply Motion Module.")
    parser.add_argument("transformer", help="a video DiT transformer/ folder (config.json + weights)")
    parser.add_argument("--base", required=True, help="folder to write the image base to")
    parser.add_argument("--motion-module", required=True, help="motion-module .safetensors file to write")
    args = parser.parse_args(argv)
    base, motion = split_motion_module(args.transformer, args.base, args.motion_module)
    print(f"wrote {base} (image base) and {motion} (motion module)")
    return 0
