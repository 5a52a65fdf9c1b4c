"""Assemble the demo chain's outputs into one model folder in the published layouts:

    <output>/transformer/{config.json, diffusion_pytorch_model.safetensors}   video DiT with motion modules
    <output>/pixart_base/{config.json, diffusion_pytorch_model.safetensors}   the same DiT without them
    <output>/motion_module.safetensors                                        its motion modules (+ config)
    <output>/vae/{config.json, diffusion_pytorch_model.safetensors}           slice VAE
    <output>/text_encoder/, <output>/tokenizer/                               tiny T5 + world tokenizer
    <output>/motion_lora/<name>.safetensors                                   the MotionLoRA
    <output>/generate.yaml                                                    generation defaults for this model
    <output>/demo_provenance.json                                             how it was made

Weights are stored in fp16 to keep the folder small (the loaders cast to the compute dtype).
The folder is written next to the target and swapped in at the end, so an interrupted export
never leaves half a model where the default model is expected.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

STORE_DTYPE = torch.float16


def _copy_weights(source: Path, target: Path) -> None:
    from easyanimate_core.checkpoints import load_state_dict, save_state_dict

    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            tensors = {k: (v.to(STORE_DTYPE) if v.is_floating_point() else v).contiguous()
                       for k, v in load_state_dict(item).items()}
            save_state_dict(target / item.name, tensors)
        elif item.is_file():
            shutil.copy2(item, target / item.name)


def export_model(work: Path, output: Path, cfg: dict, timings: dict) -> Path:
    from easyanimate_core.checkpoints.split import split_motion_module

    work, output = Path(work), Path(output)
    runs = work / "runs"
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _copy_weights(runs / "dit-full" / "transformer", staging / "transformer")
    # base + standalone motion module, for the v1-style workflow (split-motion-module does the same)
    split_motion_module(staging / "transformer", staging / "pixart_base", staging / "motion_module.safetensors")
    _copy_weights(work / "models" / "vae", staging / "vae")
    lora = runs / "motion-lora" / "motion_lora.safetensors"
    (staging / "motion_lora").mkdir()
    moves = cfg["stages"]["motion-lora"].get("augment", {}).get("camera_moves") or ["motion_lora"]
    name = "_".join(moves)
    _copy_weights_file(lora, staging / "motion_lora" / f"{name}.safetensors")
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(work / "models" / part, staging / part)
    provenance = {
        "made_by": "python training/run.py demo-train",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "seed": cfg["seed"],
        "world": cfg["world"],
        "stage_seconds": timings,
        "stage_configs": {s: json.loads(json.dumps(cfg["stages"][s])) for s in cfg["stages"]},
        "stored_dtype": str(STORE_DTYPE).replace("torch.", ""),
    }
    (staging / "demo_provenance.json").write_text(json.dumps(provenance, indent=1))
    (staging / "generate.yaml").write_text(generation_defaults(cfg))
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return output


def generation_defaults(cfg: dict) -> str:
    """The settings the model was made for and scored with (``run.py generate --config``)."""
    import yaml

    size = cfg["world"]["size"]
    e = cfg["eval"]
    return yaml.safe_dump({"width": size, "height": size, "frames": e.get("frames", 16), "fps": cfg["world"]["fps"],
                           "steps": e.get("steps", 20), "cfg": e.get("cfg", 5.0),
                           "sampler": e.get("sampler", "dpmpp_2m"), "negative": "",
                           "seam": e.get("seam", "none")},
                          sort_keys=False)


def _copy_weights_file(source: Path, target: Path) -> None:
    from easyanimate_core.checkpoints import load_state_dict, save_state_dict

    tensors = {k: (v.to(STORE_DTYPE) if v.is_floating_point() else v).contiguous()
               for k, v in load_state_dict(source).items()}
    save_state_dict(target, tensors)
