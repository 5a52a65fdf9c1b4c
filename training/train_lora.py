"""LoRA training on the video DiT: plain LoRA, MotionLoRA and the domain adapter.

    python training/run.py lora            --config training/configs/lora.yaml [key=value ...]
    python training/run.py motion-lora     --config training/configs/motion_lora.yaml
    python training/run.py domain-adapter  --config training/configs/domain_adapter.yaml

The base transformer stays frozen; trainable low-rank adapters (``down`` random, ``up`` zero, so
training starts from the base model exactly) are put on ``lora.target`` layers:

* ``lora`` - every Linear of the DiT (EasyAnimate's kohya-style LoRA, rank 128, alpha 64);
* ``motion-lora`` - motion-module attention q/k/v/out only (AnimateDiff's MotionLoRA), trained
  on a few reference videos with rule-based camera-motion augmentation (zoom, pan);
* ``domain-adapter`` - image attention (attn1/attn2) q/k/v/out only, trained on static frames
  sampled from videos, so motion modules trained afterwards need not absorb the data's look.

The result is one file, ``<output_dir>/<lora.file_name>``, in the published layout of
``lora.format`` ("kohya", "peft" (+ adapter_config.json) or "motion_lora"), loadable at any
strength by the pack's LoRA loaders. Everything else (data, diffusion loss, accelerate, resume)
is the DiT trainer's.
"""

from __future__ import annotations

from pathlib import Path

from easyanimate_core.models.lora import TRAIN_TARGETS
from training.augment import MOVES
from training.config import parse_args
from training.loop import write_json
from training.options import Opt, choice, listof, number, text, whole, with_defaults
from training.train_dit import OPTIONS as DIT_OPTIONS
from training.train_dit import run

LORA_OPTIONS = {
    **with_defaults(DIT_OPTIONS, {
        "train": {"output_dir": "outputs/lora", "lr": 1e-4, "ema": False, "warmup_steps": 0, "weight_decay": 1e-2,
                  "adam_eps": 1e-8},
        "data": {"frames": 16},
    }, "LoRA defaults"),
    "lora": {"target": Opt("all", choice(*TRAIN_TARGETS), "layers that get adapters: every Linear, motion-module "
                                                          "attention or image attention"),
             "rank": Opt(128, whole(1), "adapter rank"),
             "alpha": Opt(64.0, number(0, low_open=True), "adapter scale is alpha / rank"),
             "format": Opt("kohya", choice("kohya", "peft", "motion_lora"), "layout of the exported file"),
             "file_name": Opt("lora.safetensors", text(), "exported file name inside train.output_dir")},
    "augment": {"camera_moves": Opt([], listof(choice(*MOVES)), "camera moves drawn per clip; empty: none"),
                "camera_strength": Opt(0.25, number(0, 1, high_open=True), "share of the frame a move spans")},
}

STAGE_DEFAULTS = {
    "lora": {},
    # MotionLoRA files carry no alpha (the loader's scale applies), so train at scale 1
    "motion-lora": {"lora": {"target": "motion", "rank": 64, "alpha": 64.0, "format": "motion_lora",
                             "file_name": "motion_lora.safetensors"},
                    "data": {"types": "video"}, "train": {"output_dir": "outputs/motion_lora"}},
    "domain-adapter": {"lora": {"target": "spatial_attention", "rank": 128, "alpha": 128.0,
                                "format": "motion_lora", "file_name": "domain_adapter.safetensors"},
                       "data": {"types": "video", "frames": 1, "static_frames": True},
                       "train": {"output_dir": "outputs/domain_adapter"}},
}


def command_options(command: str) -> dict:
    return with_defaults(LORA_OPTIONS, STAGE_DEFAULTS[command])


def add_adapters(model, cfg) -> list[dict]:
    from easyanimate_core.models.lora import add_trainable_lora

    lcfg = cfg["lora"]
    model.requires_grad_(False)
    params = add_trainable_lora(model, lcfg["target"], int(lcfg["rank"]), float(lcfg["alpha"]))
    return [{"params": params, "lr": cfg["train"]["lr"]}]


def export_lora(model, cfg) -> Path:
    from easyanimate_core.checkpoints import save_state_dict
    from easyanimate_core.models.lora import trainable_lora_state_dict

    lcfg = cfg["lora"]
    out = Path(cfg["train"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / lcfg["file_name"]
    save_state_dict(path, trainable_lora_state_dict(model, lcfg["format"]),
                    metadata={"target": lcfg["target"], "rank": str(lcfg["rank"]), "alpha": str(lcfg["alpha"])})
    if lcfg["format"] == "peft":
        write_json(out / "adapter_config.json",
                   {"peft_type": "LORA", "r": int(lcfg["rank"]), "lora_alpha": float(lcfg["alpha"])})
    return path


def main(command: str, argv) -> int:
    from training.augment import CameraAugment

    cfg, resume = parse_args(command, argv, command_options(command), __doc__.split("\n\n")[0])
    moves = cfg["augment"]["camera_moves"]
    transform = CameraAugment(moves, cfg["augment"]["camera_strength"]) if moves else None
    return run(command, cfg, resume, adapt=add_adapters, export=export_lora, transform=transform)
