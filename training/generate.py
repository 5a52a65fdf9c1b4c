"""``python training/run.py generate``: text / image / video -> video (or image) from the command line.

Options come from ``DEFAULTS`` below, then the model folder's ``generate.yaml`` (the settings it
was made for), then a YAML file (``--config``, same key names), then command-line flags
(``--steps 30``, ``--start-image a.png``); later layers win. Models are given
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

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.sampling.context import FUSE_MODES
from training.options import Opt, choice, defaults_of, either, flag, listof, number, optional, path, show, text, validate, whole

V3_NEGATIVE = (
    "The video is not of a high quality, it has a low resolution, and the audio quality is not clear. "
    "Strange motion trajectory, a poor composition and deformed video, low resolution, duplicate and "
    "ugly, strange body structure, long and strange neck, bad teeth, bad eyes, bad limbs, bad hands, "
    "rotating camera, blurry camera, shaking camera. Deformation, low-resolution, blurry, ugly, distortion.")

SAMPLERS = ("ddim", "euler", "euler_a", "dpmpp_2m", "unipc")
UNIT = number(0, 1)
OPTIONS = {
    # models
    "model": Opt(None, optional(path()), "release folder with transformer/ vae/ text_encoder/ tokenizer/ "
                                         "image_encoder/ (none: the embedded default model)"),
    "transformer": Opt(None, optional(path()), "transformer/ folder or weights file (wins over the model's)"),
    "transformer_config": Opt(None, optional(choice("v1", "v2", "v3")),
                              "preset for a loose transformer weights file without config.json"),
    "motion_module": Opt(None, optional(path()), "standalone motion-module file put into every block"),
    "vae": Opt(None, optional(path()), "vae/ folder or weights file (wins over the model's)"),
    "vae_config": Opt(None, optional(choice("v2", "v3")), "preset for a loose VAE weights file"),
    "text_encoder": Opt(None, optional(path()), "T5 text encoder folder (wins over the model's)"),
    "tokenizer": Opt(None, optional(path()), "T5 tokenizer folder (default: the text encoder's or the model's)"),
    "clip": Opt(None, optional(path()), "CLIP image encoder folder (image-to-video with InP models)"),
    "loras": Opt([], listof(text()), "LoRA files merged for this run, each PATH or PATH:STRENGTH (strength 1)"),
    "dtype": Opt("auto", choice("auto", "fp32", "bf16", "fp16"), "weights and compute dtype (auto: bf16 on GPU, "
                                                                  "fp32 on CPU)"),
    "device": Opt("auto", text(), "auto, cpu, cuda, cuda:N or mps"),
    "offload": Opt(False, flag(), "keep models on the CPU and move each to the device only while it runs"),
    "threads": Opt(0, whole(), "CPU threads for torch (0: torch's default)"),
    # what to make
    "prompt": Opt(None, optional(text()), "what the video shows (required)"),
    "negative": Opt(V3_NEGATIVE, text(), "what it should not show (classifier-free guidance)"),
    "width": Opt(672, whole(8), "width in pixels (floored to twice the VAE's factor: 16 for the releases, 8 for the "
                                  "embedded model)"),
    "height": Opt(384, whole(8), "height in pixels (floored like the width)"),
    "frames": Opt(144, whole(1), "frame count; 1 makes an image (png); the VAE's rule applies (1, 8k, 8k+1)"),
    "fps": Opt(24.0, number(0, low_open=True), "frames per second of the written video"),
    "steps": Opt(25, whole(1), "sampling steps"),
    "cfg": Opt(7.0, number(0), "classifier-free guidance scale (1: no guidance)"),
    "sampler": Opt("dpmpp_2m", choice(*SAMPLERS), "sampler"),
    "karras": Opt(False, flag(), "Karras noise levels instead of the model's"),
    "seed": Opt(43, whole(), "seed of the initial noise"),
    "guidance_rescale": Opt(0.0, UNIT, "rescale guided predictions towards the conditional one's std (0: off)"),
    "start_image": Opt(None, optional(path()), "image-to-video: the first frame"),
    "end_image": Opt(None, optional(path()), "image-to-video: the last frame"),
    "base_resolution": Opt(None, optional(whole(16)), "size the video after the start image's aspect around "
                                                      "this base (e.g. 512); wins over width/height"),
    "video": Opt(None, optional(path()), "video-to-video: the input video"),
    "strength": Opt(1.0, UNIT, "video-to-video denoise strength (< 1 keeps more of the input)"),
    "clip_apply_ratio": Opt(0.5, UNIT, "share of the steps that see the start image's CLIP tokens"),
    "seam": Opt("smooth", choice("none", "blend", "smooth"), "VAE slice-seam treatment (smooth: the reference's)"),
    # long videos
    "context_length": Opt(0, whole(), "latent frames per sliding context window (0: off)"),
    "context_overlap": Opt(4, whole(), "latent frames shared by neighbouring windows"),
    "context_fuse": Opt("pyramid", choice(*FUSE_MODES), "how overlapping windows' predictions are weighted"),
    "context_strides": Opt(2, whole(1, 8), "1: contiguous windows only; 2+: also windows of every 2nd (4th, ...) "
                                           "latent frame, which keep motion steady across windows"),
    "chunk_frames": Opt(0, whole(), "frames per chunk in chunked long-video mode (0: off)"),
    "overlap_frames": Opt(4, whole(), "frames each chunk takes from the end of the previous one"),
    # speed
    "step_cache": Opt(None, optional(either(flag(), number(0))),
                      "skip most of the DiT on steps whose input changed less than this threshold; the bare "
                      "flag (YAML: true) takes the default 0.4; absent (YAML: false) is off. See docs/step_cache.md"),
    # output
    "output": Opt(None, optional(path()), "the file to write: .mp4 / .mkv / .mov (a .png for one frame); "
                                          "default samples/<time>.mp4"),
    # appended options (saved YAML files name options, so order is free; kept last for readability)
    "attention": Opt("sdpa", choice("sdpa", "xformers", "chunked"), "attention kernel: sdpa (PyTorch), xformers "
                                                                      "(needs the package and CUDA), chunked (bounded "
                                                                      "memory for very long sequences)"),
}
DEFAULTS = defaults_of(OPTIONS)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
log = logging.getLogger("easyanimate_core")


def _flag_value(text: str):
    """A number flag's text as a number when it reads as one; anything else is left for the
    option check to name (``--frames eight`` -> 'frames: expected a whole number ...')."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py generate", description=__doc__.split("\n\n")[0],
        epilog="A --config YAML file takes the same options with underscores (start_image: a.png); flags win "
               "over it, and both over a model folder's generate.yaml.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="YAML file with any of the options below "
                                                         "(see training/configs/generate_*.yaml)")
    for key, option in OPTIONS.items():
        flag_name = "--" + key.replace("_", "-")
        kind = option.kind
        metavar = "{" + ",".join(map(str, kind.choices)) + "}" if kind.choices else key.upper()
        text_help = f"{option.help} (default: {show(option.default)})"
        if key == "step_cache":  # a bare flag takes the default threshold
            parser.add_argument(flag_name, dest=key, default=None, nargs="?", const=True, type=_flag_value,
                                metavar="THRESHOLD", help=text_help)
        elif kind.value_type is bool:
            parser.add_argument(flag_name, dest=key, default=None, action=argparse.BooleanOptionalAction,
                                help=text_help)
        elif kind.value_type is list:
            parser.add_argument(flag_name, dest=key, default=None, nargs="*", metavar=metavar, help=text_help)
        else:
            reader = _flag_value if kind.value_type in (int, float) else str
            parser.add_argument(flag_name, dest=key, default=None, type=reader, metavar=metavar, help=text_help)
    return parser


def parse(argv) -> dict:
    """The run's options: defaults < a model folder's generate.yaml < --config < flags, every value
    checked (type, range) and the LoRA specs and device read, before anything loads."""
    args = vars(build_parser().parse_args(list(argv)))
    config_file = args.pop("config")
    chosen = _read_yaml(config_file) if config_file else {}
    sources = dict.fromkeys(chosen, str(config_file))
    flags = {k: v for k, v in args.items() if v is not None}
    sources.update(dict.fromkeys(flags, "command line"))
    chosen.update(flags)
    config = dict(DEFAULTS)
    if not any(chosen.get(key) for key in MODEL_OPTIONS):
        settings, where = default_model_options(), str(DEFAULT_MODEL / "generate.yaml")
    elif chosen.get("model"):
        settings, where = model_settings(Path(chosen["model"])), str(Path(chosen["model"]) / "generate.yaml")
    else:
        settings, where = {}, ""
    config.update(settings)
    config.update(chosen)
    sources = {**dict.fromkeys(settings, where), **sources}
    config = validate(config, OPTIONS, sources)
    if not config["prompt"]:
        raise InputError("no prompt given; pass --prompt \"...\" or set prompt in the --config file")
    for spec in config["loras"]:
        lora_spec(spec)
    resolve_device(config["device"])
    check_combination(config)
    return config


def check_combination(config: dict) -> None:
    """Options that would be ignored in this combination are an error, not a silent no-op."""
    if config["chunk_frames"] and (config["end_image"] or config["video"]):
        raise InputError("--chunk-frames (long-video mode) takes a start image only; drop --end-image / "
                         "--video or the chunking")
    if config["base_resolution"] and not config["start_image"]:
        raise InputError("--base-resolution sizes the video after the start image's aspect; pass --start-image, "
                         "or set --width / --height instead")
    if config["strength"] != 1.0 and not config["video"]:
        raise InputError(f"--strength {config['strength']} applies to video-to-video only; pass --video, or drop "
                         f"--strength")
    if config["video"] and config["strength"] == 1.0:  # strength 1 noises the input away entirely
        raise InputError("--video needs --strength below 1 (lower keeps more of the input: the embedded model "
                         "follows it at about 0.3, the releases are used at 0.5-0.8); without it the video is "
                         "ignored")


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
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a torch device; use cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise InputError(f"--device {name}: this machine has {found} CUDA GPU(s) visible to torch; use --device "
                         f"auto, cpu{', cuda:0' if found else ''}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS (Apple GPU) is not available here; use --device auto or cpu")
    return device


def resolve_step_cache(value):
    """The checked ``step_cache`` option (a threshold, true for the default one, false / none for
    off) as a :class:`StepCache` or None."""
    from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD, StepCache

    if value is None or value is False:
        return None
    return StepCache(DEFAULT_THRESHOLD if value is True else float(value))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
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
    """``PATH`` or ``PATH:STRENGTH`` -> (path, strength); strength defaults to 1. A tail after the
    last colon that holds a path separator is part of the path (``C:/loras/a.safetensors``);
    any other tail must be a finite number."""
    import math

    path, sep, tail = str(spec).rpartition(":")
    if not sep or Path(str(spec)).exists() or "/" in tail or "\\" in tail:
        return str(spec), 1.0
    try:
        strength = float(tail)
    except ValueError:
        strength = None
    if strength is None or not math.isfinite(strength):
        raise InputError(f"--loras {spec!r}: the strength {tail!r} is not a finite number; write PATH or "
                         f"PATH:STRENGTH, e.g. {Path(path).name}:0.8")
    return path, strength


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
    """(3, H, W) float in [0, 1]; an unreadable file is one :class:`InputError`."""
    from PIL import Image

    if not Path(path).is_file():
        raise InputError(f"image {path} does not exist; check the path")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"image {path} cannot be read ({str(error).splitlines()[0]}); pass a PNG, JPEG or WebP "
                         f"image") from error
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


def _model_config(path, preset, presets) -> dict:
    """The config a model part will load with, read without loading it (for the size estimate)."""
    import json

    if path is not None and (Path(path) / "config.json").is_file():
        try:
            return json.loads((Path(path) / "config.json").read_text())
        except ValueError:  # the loader names a broken config.json; the estimate uses the preset
            pass
    return dict(presets.get(preset or "v3", {}))


def _weights_bytes(paths, offload: bool) -> int:
    """Bytes of weight files the device holds at once: all of them, or the largest model when
    ``offload`` moves one model at a time."""
    sizes = [0]
    for part in paths:
        if part is not None:
            files = [Path(part)] if Path(part).is_file() else Path(part).rglob("*")
            sizes.append(sum(f.stat().st_size for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth")))
    return max(sizes) if offload else sum(sizes)


def check_budget(config: dict, device: torch.device, context=None) -> None:
    """Refuse a run that cannot fit the device's free memory, and say when it is long on the CPU,
    from the shapes and the context windows alone (easyanimate_core.sampling.budget), before any
    model loads."""
    from easyanimate_core.checkpoints.presets import TRANSFORMER_PRESETS, VAE_PRESETS
    from easyanimate_core.sampling.budget import check_fits, cpu_time_warning, estimate_generation

    transformer, vae = _part(config, "transformer", "transformer"), _part(config, "vae", "vae")
    dtype = resolve_dtype(config["dtype"], device)
    estimate = estimate_generation(
        config["width"], config["height"], config["frames"], config["steps"],
        _model_config(transformer, config["transformer_config"], TRANSFORMER_PRESETS),
        _model_config(vae, config["vae_config"], VAE_PRESETS),
        weights_bytes=_weights_bytes([transformer, vae, _part(config, "text_encoder", "text_encoder", required=False)],
                                     config["offload"]),
        dtype_bytes=torch.finfo(dtype).bits // 8, context=context, chunk_frames=config["chunk_frames"])
    check_fits(estimate, device)
    warning = cpu_time_warning(estimate, torch.get_num_threads()) if device.type == "cpu" else None
    if warning:
        log.warning("note: %s", warning)


def set_attention(name: str) -> None:
    from easyanimate_core.models.attention import set_backend

    try:
        set_backend(name)
    except ValueError as error:
        raise InputError(f"--attention {name}: {error}") from None


def rescue_frames(output: Path, error: Exception, pieces, first_frame: int) -> InputError:
    """Save frames a failed write would lose as PNGs in the temp folder; the error names it."""
    import itertools
    import tempfile

    from easyanimate_core.video_io import write_png_frames

    folder = Path(tempfile.mkdtemp(prefix=f"vdit-rescue-{time.strftime('%Y%m%d-%H%M%S')}-"))
    frames = itertools.chain.from_iterable(to_uint8_frames(piece) for piece in pieces)
    count = write_png_frames(folder, frames, start=first_frame)
    earlier = f"; frames before {first_frame} are in the incomplete {output}" if first_frame else ""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return InputError(f"writing {output} failed ({reason}); the {count} generated frames were saved as PNG files in "
                      f"{folder}{earlier}")


def write_result(output: Path, pieces, fps: float) -> tuple[str, int]:
    """Write the generated piece(s): one frame as a PNG, else a video streamed frame by frame
    (chunked mode never holds the clip). When writing fails, the frames are not lost: see
    :func:`rescue_frames`. Returns (path written, frame count)."""
    import contextlib
    import itertools

    from easyanimate_core.video_io import VideoWriter, write_video

    if isinstance(pieces, list) and pieces[0].shape[2] == 1:  # an image
        try:
            return write_video(output, list(to_uint8_frames(pieces[0])), fps=fps), 1
        except Exception as error:
            raise rescue_frames(output, error, pieces, 0) from error
    in_memory = pieces if isinstance(pieces, list) else None
    stream, written = iter(pieces), 0
    writer = VideoWriter(output, fps)
    for piece in stream:  # generation (chunked mode) happens here, outside the write's error handling
        try:
            for frame in to_uint8_frames(piece):
                writer.write(frame)
        except Exception as error:
            with contextlib.suppress(Exception):  # the failure is reported below; the file is lost anyway
                writer.close()
            if in_memory is not None:
                raise rescue_frames(output, error, in_memory, 0) from error
            raise rescue_frames(output, error, itertools.chain([piece], stream), written) from error
        written += piece.shape[2]
    try:
        writer.close()
    except Exception as error:
        if in_memory is None:
            raise InputError(f"finishing {output} failed ({error}); the file is incomplete") from error
        raise rescue_frames(output, error, in_memory, 0) from error
    return str(output), written


def main(command: str, argv) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse(argv)
    from easyanimate_core.video_io import check_output

    output = check_output(config["output"] or f"samples/{time.strftime('%Y%m%d-%H%M%S')}.mp4", config["fps"],
                          config["frames"] if not config["chunk_frames"] else max(2, config["frames"]))
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    set_attention(config["attention"])
    from easyanimate_core.progress import console
    from easyanimate_core.sampling.context import ContextWindows
    from easyanimate_core.sampling.long_video import iter_long_video
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import generate
    from easyanimate_core.sampling.shape_rules import bucket_size

    start = read_image(config["start_image"]) if config["start_image"] else None
    end = read_image(config["end_image"]) if config["end_image"] else None
    video = read_input_video(config["video"]) if config["video"] else None
    if start is not None and config["base_resolution"]:
        config["width"], config["height"] = bucket_size(start.shape[2], start.shape[1],
                                                        int(config["base_resolution"]))
    step_cache = resolve_step_cache(config["step_cache"])
    context = None
    if config["context_length"]:
        context = ContextWindows(int(config["context_length"]), int(config["context_overlap"]),
                                 config["context_fuse"], int(config["context_strides"]))
    sampling = SamplingOptions(steps=config["steps"], cfg=config["cfg"], sampler=config["sampler"],
                               karras=config["karras"], seed=config["seed"], strength=config["strength"],
                               clip_apply_ratio=config["clip_apply_ratio"],
                               guidance_rescale=config["guidance_rescale"], context=context,
                               step_cache=step_cache)
    options = dict(width=config["width"], height=config["height"],
                   seam=None if config["seam"] == "none" else config["seam"], progress=console("generate"))
    check_budget(config, resolve_device(config["device"]), context)
    components = load_components(config)  # after the options are checked: bad numbers cost no loading
    began = time.perf_counter()
    if config["chunk_frames"]:
        pieces = iter_long_video(components, config["prompt"], config["negative"], sampling, frames=config["frames"],
                                 chunk_frames=config["chunk_frames"], overlap_frames=config["overlap_frames"],
                                 start_image=start, **options)
    else:
        pieces = [generate(components, config["prompt"], config["negative"], sampling, frames=config["frames"],
                           start_image=start, end_image=end, video=video, **options)]
    path, written = write_result(output, pieces, config["fps"])
    log.info("wrote %s (%d frame%s, %.1f s)", path, written, "" if written == 1 else "s",
             time.perf_counter() - began)
    if step_cache is not None:
        log.info("%s", step_cache.summary())
    return 0
