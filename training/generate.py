"""``python training/run.py generate``: text / image / video -> video (or image) from the command line.

Options come from ``DEFAULTS`` below, then a YAML file (``--config``, same key names), then
command-line flags (``--steps 30``, ``--start-image a.png``); later layers win. Models are given
either as one release folder (``--model``: ``transformer/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``image_encoder/``) or one by one (``--transformer``, ``--vae``, ...; these win
over the folder's parts). Output: an mp4 (a png for ``--frames 1``), with a progress bar.

Long videos: ``--context-length N`` samples all frames at once with sliding windows of N latent
frames; ``--chunk-frames N`` generates N-frame chunks, each conditioned on the end of the
previous one, streamed to the file (memory does not grow with the clip).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from easyanimate_core.errors import CheckpointError, InputError

V3_NEGATIVE = (
    "The video is not of a high quality, it has a low resolution, and the audio quality is not clear. "
    "Strange motion trajectory, a poor composition and deformed video, low resolution, duplicate and "
    "ugly, strange body structure, long and strange neck, bad teeth, bad eyes, bad limbs, bad hands, "
    "rotating camera, blurry camera, shaking camera. Deformation, low-resolution, blurry, ugly, distortion.")

DEFAULTS = {
    # models
    "model": None,             # release folder with transformer/ vae/ text_encoder/ tokenizer/ image_encoder/
    "transformer": None,       # transformer/ folder or weights file (wins over model/transformer)
    "transformer_config": None,  # preset v1 / v2 / v3 for loose weight files without config.json
    "motion_module": None,     # standalone motion-module file put into every block
    "vae": None,
    "vae_config": None,        # preset v2 / v3 for a loose VAE weights file
    "text_encoder": None,      # T5 encoder folder
    "tokenizer": None,         # T5 tokenizer folder (default: the text encoder's folder / model/tokenizer)
    "clip": None,              # CLIP image encoder folder (image-to-video with InP models)
    "loras": [],               # ["file.safetensors", "other.safetensors:0.6"] (path[:strength])
    "dtype": "auto",           # auto (bf16 on GPU, fp32 on CPU) / fp32 / bf16 / fp16
    "device": "auto",          # auto / cpu / cuda / cuda:1 / mps
    "offload": False,          # keep models on the CPU, move each to the device only while it runs
    "threads": 0,              # CPU threads for torch; 0 = torch's default
    # what to make
    "prompt": None,
    "negative": V3_NEGATIVE,
    "width": 672,
    "height": 384,
    "frames": 144,             # 1 = an image; the VAE's rule applies (1, 8k, 8k+1)
    "fps": 24,
    "steps": 25,
    "cfg": 7.0,
    "sampler": "dpmpp_2m",     # ddim / euler / euler_a / dpmpp_2m / unipc
    "karras": False,
    "seed": 43,
    "guidance_rescale": 0.0,
    "start_image": None,       # image-to-video
    "end_image": None,
    "base_resolution": None,   # size the video after the start image's aspect (e.g. 512)
    "video": None,             # video-to-video input
    "strength": 1.0,           # video-to-video denoise strength (< 1 keeps more of the input)
    "clip_apply_ratio": 0.5,
    "seam": "smooth",          # none / blend / smooth (the reference's smooth_output)
    # long videos
    "context_length": 0,       # latent frames per sliding window; 0 = off
    "context_overlap": 4,
    "context_fuse": "pyramid",  # pyramid / linear / flat
    "chunk_frames": 0,         # frames per chunk in chunked long-video mode; 0 = off
    "overlap_frames": 4,
    # speed
    "step_cache": None,        # skip most of the DiT on steps that change little: a threshold, true = the
                               # default one (bare --step-cache); off when absent. See docs/step_cache.md
    # output
    "output": None,            # default samples/<time>.mp4
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger("easyanimate_core")


def parse(argv) -> dict:
    parser = argparse.ArgumentParser(
        prog="run.py generate", description=__doc__.split("\n\n")[0],
        epilog="Defaults:\n" + yaml.safe_dump(DEFAULTS, sort_keys=False, width=200),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with any of the options below (see training/configs/)")
    for key, value in DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if key == "step_cache":  # a bare flag takes the default threshold
            parser.add_argument(flag, dest=key, default=None, nargs="?", const=True, type=float,
                                metavar="THRESHOLD")
        elif isinstance(value, bool):
            parser.add_argument(flag, dest=key, default=None, action=argparse.BooleanOptionalAction)
        elif isinstance(value, list):
            parser.add_argument(flag, dest=key, default=None, nargs="*")
        else:
            kind = type(value) if value is not None else str
            parser.add_argument(flag, dest=key, default=None, type=kind)
    args = vars(parser.parse_args(list(argv)))
    config_file = args.pop("config")
    chosen = _read_yaml(config_file) if config_file else {}
    chosen.update({k: v for k, v in args.items() if v is not None})
    config = dict(DEFAULTS)
    if not any(chosen.get(key) for key in MODEL_OPTIONS):
        config.update(default_model_options())
    elif chosen.get("model"):
        config.update(model_settings(Path(chosen["model"])))
    config.update(chosen)
    if not config["prompt"]:
        raise InputError("no prompt given; pass --prompt \"...\" or set prompt in the --config file")
    return config


# The embedded default model (``run.py demo-train`` reproduces it): used, with the settings it
# was trained for (its generate.yaml), when no model is named.
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "vdit_default"
MODEL_OPTIONS = ("model", "transformer", "vae", "text_encoder")


def default_model_options() -> dict:
    if not (DEFAULT_MODEL / "transformer").is_dir():
        raise CheckpointError(f"no model given and the embedded default model is missing from {DEFAULT_MODEL}; "
                              f"pass --model <release folder> or rebuild it with 'python training/run.py demo-train'")
    # one thread: on a model this small, syncing a second thread costs more than it computes
    # (measured 0.3 s vs 30 s for 20 steps with the other core busy)
    return {"model": str(DEFAULT_MODEL), "threads": 1, **model_settings(DEFAULT_MODEL)}


def model_settings(model: Path) -> dict:
    """The settings a model folder was made for: its generate.yaml (``demo-train`` writes one,
    e.g. 32x32 frames), or none. Options given on the command line or in --config win."""
    settings = model / "generate.yaml"
    return _read_yaml(settings) if settings.is_file() else {}


def _read_yaml(path) -> dict:
    from training.config import read_yaml_options

    loaded = read_yaml_options(path)
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        raise InputError(f"config file {path} has unknown option(s) {unknown}; known options are listed "
                         f"by 'run.py generate --help'")
    return loaded


def _part(config, key, subfolder, required=True):
    """A model path: the explicit option, else ``model/<subfolder>`` when that exists."""
    if config[key]:
        path = Path(config[key])
        if not path.exists():
            raise CheckpointError(f"--{key.replace('_', '-')} {path} does not exist; check the path")
        return path
    if config["model"]:
        root = Path(config["model"])
        if not root.is_dir():
            raise CheckpointError(f"--model {root} is not a folder; pass a release folder with "
                                  f"transformer/, vae/ and text_encoder/ inside")
        if (root / subfolder).exists():
            return root / subfolder
    if required:
        raise CheckpointError(f"no {key.replace('_', ' ')} given; pass --{key.replace('_', '-')} PATH or "
                              f"--model with a {subfolder}/ folder inside")
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or mps") from error


def resolve_step_cache(value):
    """The ``step_cache`` option (a threshold, true for the default one, false / null for off) as a
    :class:`StepCache` or None."""
    from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD, StepCache

    if value is None or value is False:
        return None
    if value is True:
        return StepCache(DEFAULT_THRESHOLD)
    if isinstance(value, (int, float)):
        return StepCache(float(value))
    raise InputError(f"step_cache {value!r} is not a threshold; give a number >= 0 (--step-cache 0.4) or "
                     f"true for the default {DEFAULT_THRESHOLD}")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"--dtype {name!r} is unknown; choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_components(config: dict):
    """Load every model the run needs onto the CPU (``offload``) or the device; LoRAs merged."""
    from easyanimate_core.sampling.pipeline import load_components as load

    device = resolve_device(config["device"])
    transformer_path, vae_path = _part(config, "transformer", "transformer"), _part(config, "vae", "vae")
    # InP (12-channel) models read CLIP image tokens of every start image (in chunked mode the
    # chunks after the first start from the previous chunk's frames)
    wants_images = config["start_image"] or config["chunk_frames"]
    clip = _part(config, "clip", "image_encoder", required=False) if wants_images else None
    components = load(transformer_path, vae_path, _part(config, "text_encoder", "text_encoder"),
                      tokenizer=_part(config, "tokenizer", "tokenizer", required=False), clip=clip,
                      motion_module=config["motion_module"], transformer_config=config["transformer_config"],
                      vae_config=config["vae_config"], dtype=resolve_dtype(config["dtype"], device),
                      device=device, offload=config["offload"])
    apply_loras(components.transformer, config["loras"] or [])
    return components


def lora_spec(spec: str) -> tuple:
    """``PATH`` or ``PATH:STRENGTH`` -> (path, strength); strength defaults to 1."""
    path, sep, tail = str(spec).rpartition(":")
    if sep and not Path(str(spec)).exists():
        try:
            return path, float(tail)
        except ValueError:
            pass
    return str(spec), 1.0


def apply_loras(transformer, specs) -> None:
    """Merge every ``PATH[:STRENGTH]`` LoRA (kohya / PEFT / MotionLoRA / domain adapter) into the
    DiT for this run, stacked in the order given."""
    from easyanimate_core.models.lora import apply_loras as apply
    from easyanimate_core.models.lora import linear_layers, load_lora

    layers = linear_layers(transformer)
    patches = []
    for spec in specs:
        path, strength = lora_spec(spec)
        if not Path(path).is_file():
            raise CheckpointError(f"LoRA file {path} does not exist; pass --loras PATH or PATH:STRENGTH")
        patches.append((load_lora(path, layers), strength))
    apply(layers, patches)


def read_image(path) -> torch.Tensor:
    """(3, H, W) float in [0, 1]."""
    from PIL import Image

    if not Path(path).is_file():
        raise InputError(f"image {path} does not exist; check the path")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


def read_input_video(path) -> torch.Tensor:
    """(3, F, H, W) float in [0, 1]."""
    from easyanimate_core.video_io import read_video

    frames, _ = read_video(path)
    return torch.from_numpy(frames).float().div(255).permute(3, 0, 1, 2)


def to_uint8_frames(video: torch.Tensor):
    """(1, 3, F, H, W) in [0, 1] -> (H, W, 3) uint8 frames, one at a time (no full-clip copy)."""
    for frame in video[0].unbind(1):
        yield (frame.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def main(command: str, argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse(argv)
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    from easyanimate_core.progress import console
    from easyanimate_core.sampling.context import ContextWindows
    from easyanimate_core.sampling.frames import bucket_size
    from easyanimate_core.sampling.long_video import iter_long_video
    from easyanimate_core.sampling.pipeline import generate
    from easyanimate_core.video_io import VideoWriter, write_video

    start = read_image(config["start_image"]) if config["start_image"] else None
    end = read_image(config["end_image"]) if config["end_image"] else None
    video = read_input_video(config["video"]) if config["video"] else None
    if start is not None and config["base_resolution"]:
        config["width"], config["height"] = bucket_size(start.shape[2], start.shape[1],
                                                        int(config["base_resolution"]))
    step_cache = resolve_step_cache(config["step_cache"])  # checked before any model loads
    components = load_components(config)
    context = None
    if config["context_length"]:
        context = ContextWindows(int(config["context_length"]), int(config["context_overlap"]),
                                 config["context_fuse"])
    passed = ("width", "height", "steps", "cfg", "sampler", "karras", "guidance_rescale", "clip_apply_ratio")
    options = {key: config[key] for key in passed}
    options.update(context=context, seam=None if config["seam"] == "none" else config["seam"],
                   progress=console("generate"), step_cache=step_cache)
    output = Path(config["output"] or f"samples/{time.strftime('%Y%m%d-%H%M%S')}.mp4")
    began = time.perf_counter()
    if config["chunk_frames"]:
        if end is not None or video is not None:
            raise InputError("--chunk-frames (long-video mode) takes a start image only; drop --end-image / "
                             "--video or the chunking")
        pieces = iter_long_video(components, config["prompt"], config["negative"], frames=config["frames"],
                                 chunk_frames=config["chunk_frames"], overlap_frames=config["overlap_frames"],
                                 seed=config["seed"], start_image=start, **options)
    else:
        pieces = [generate(components, config["prompt"], config["negative"], frames=config["frames"],
                           seed=config["seed"], start_image=start, end_image=end, video=video,
                           strength=config["strength"], **options)]
    if isinstance(pieces, list) and pieces[0].shape[2] == 1:  # an image
        path, written = write_video(output, list(to_uint8_frames(pieces[0])), fps=config["fps"]), 1
    else:  # streamed frame by frame: chunked mode never holds the clip
        written = 0
        with VideoWriter(output, config["fps"]) as writer:
            for piece in pieces:
                for frame in to_uint8_frames(piece):
                    writer.write(frame)
                written += piece.shape[2]
        path = str(output)
    log.info("wrote %s (%d frame%s, %.1f s)", path, written, "" if written == 1 else "s",
             time.perf_counter() - began)
    if step_cache is not None:
        log.info("%s", step_cache.summary())
    return 0
