"""Shared pieces of the training tests: a tiny on-disk dataset and in-process CLI runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# trainer runs in fresh processes (resume after a kill, accelerate launch): one thread, tests importable
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}


def vae_config() -> dict:
    """The shared tiny VAE config; with one layer per block its mid block has no attention, so
    the config says so (otherwise the saved folder's config and weights disagree on load)."""
    from tiny_models import tiny_vae_config

    return {**tiny_vae_config(), "mid_block_use_attention": False}


def moving_square(frames: int, size: int = 32, seed: int = 0, shift: int = 1) -> np.ndarray:
    """(F, size, size, 3) uint8: a coloured square sliding over a gradient background."""
    rng = np.random.default_rng(seed)
    color = rng.integers(60, 255, 3)
    y, x = np.mgrid[0:size, 0:size]
    background = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).clip(0, 255)
    video = np.empty((frames, size, size, 3), np.uint8)
    start = rng.integers(0, size // 2, 2)
    for f in range(frames):
        frame = background.copy()
        top, left = (start + f * shift) % (size - 10)
        frame[top:top + 10, left:left + 10] = color
        video[f] = frame
    return video


def make_dataset(root: Path, videos: int = 4, images: int = 4, frames: int = 12, size: int = 32,
                 corrupt: int = 0) -> Path:
    """Write videos (mp4), images (png) and a metadata.json with relative paths; ``corrupt``
    extra entries point at files that are not videos."""
    from PIL import Image

    from easyanimate_core.video_io import write_video

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(videos):
        name = f"video_{i}.mp4"
        write_video(root / name, moving_square(frames, size, seed=i), fps=8)
        records.append({"file_path": name, "text": f"a square moving {i}", "type": "video"})
    for i in range(images):
        name = f"image_{i}.png"
        Image.fromarray(moving_square(1, size, seed=100 + i)[0]).save(root / name)
        records.append({"file_path": name, "text": f"a still square {i}", "type": "image"})
    for i in range(corrupt):
        name = f"broken_{i}.mp4"
        (root / name).write_bytes(b"not a video at all")
        records.append({"file_path": name, "text": "broken", "type": "video"})
    path = root / "metadata.json"
    path.write_text(json.dumps(records))
    return path


def losses(output_dir, name: str) -> list[float]:
    import csv

    with open(Path(output_dir) / "losses.csv") as f:
        return [float(r["value"]) for r in csv.DictReader(f) if r["name"] == name]


def image_dit_config(in_channels: int = 4) -> dict:
    """The tiny DiT without motion modules (the stage-1 image model)."""
    from tiny_models import tiny_dit_config

    config = {**tiny_dit_config(in_channels), "basic_block_type": "basic"}
    for key in ("motion_module_kwargs_even", "motion_module_kwargs_odd", "motion_module_type"):
        config.pop(key)
    return config


def motion_config() -> dict:
    """The keys that turn the image DiT into the tiny v3-style video DiT."""
    from tiny_models import tiny_dit_config

    return {k: v for k, v in tiny_dit_config(4).items() if k.startswith("motion") or k == "basic_block_type"}


def write_models(root: Path) -> Path:
    """root/vae (tiny slice VAE) + root/text_encoder, root/tokenizer (tiny T5)."""
    import torch
    from tiny_models import _save_diffusers
    from tiny_text import write_tiny_text_encoder

    from easyanimate_core.models.vae import VideoVAE

    root = Path(root)
    torch.manual_seed(0)
    _save_diffusers(root / "vae", VideoVAE.from_config(vae_config()))
    write_tiny_text_encoder(root)
    return root


def _write_yaml(path: Path, cfg: dict, sections: dict) -> str:
    import yaml

    for group, values in sections.items():
        cfg.setdefault(group, {}).update(values)
    Path(path).write_text(yaml.safe_dump(cfg))
    return str(path)


def dit_yaml(path: Path, models: Path, metadata: Path, output_dir: Path, **sections) -> str:
    """A DiT/LoRA trainer config for the tiny models; ``sections`` are merged per group."""
    cfg = {"vae": {"pretrained": str(models / "vae")}, "text": {"encoder": str(models)},
           "data": {"metadata": str(metadata), "batch_size": 2, "sample_size": 32, "frames": 8,
                    "buckets": False},
           "train": {"output_dir": str(output_dir), "steps": 4, "checkpoint_every": 0, "lr": 1e-3,
                     "warmup_steps": 0}}
    return _write_yaml(path, cfg, sections)


def vae_yaml(path: Path, metadata: Path, output_dir: Path, **sections) -> str:
    """A VAE trainer config: the tiny VAE, small discriminators, 9-frame clips (lone first frame +
    one slice); ``sections`` are merged per group."""
    cfg = {"model": {"config": vae_config()},
           "loss": {"disc_start": 3, "disc_2d_channels": 8, "disc_2d_layers": 2, "disc_3d_channels": [8, 8]},
           "data": {"metadata": str(metadata), "batch_size": 1, "sample_size": 32, "frames": 9},
           "train": {"output_dir": str(output_dir), "steps": 4, "checkpoint_every": 0}}
    return _write_yaml(path, cfg, sections)


def fixed_eval_loss(transformer, models: Path, metadata: Path, frames: int = 1, seed: int = 0) -> float:
    """The diffusion loss of ``transformer`` on the first sample of ``metadata`` at fixed timesteps
    and noise: a deterministic yardstick to compare weights before and after training."""
    import torch

    from easyanimate_core.models.text_encoder import TextEncoder
    from easyanimate_core.models.vae import load_vae
    from easyanimate_core.sampling.schedule import NoiseSchedule
    from training.data import BatchPlan, MediaDataset, load_entries
    from training.losses import DiffusionTerms, diffusion_loss

    entries = load_entries(str(metadata), None)
    cfg = {"types": "both", "batch_size": 1, "sample_size": 32, "frames": frames, "stride": 1,
           "buckets": False, "random_frame_crop": False}
    plan = BatchPlan(entries, cfg, 0, interval=8)
    item = plan.epoch_batches(0)[0][0]
    pixels = MediaDataset(entries, cfg)[item]["pixels"][None]
    vae = load_vae(str(models / "vae"))
    text = TextEncoder.load(str(models))
    with torch.no_grad():
        x0 = vae.encode(pixels).mode() * vae.scaling_factor
        embeds, mask = text.encode([entries[item.index]["text"]], clean=False)
        terms = DiffusionTerms.from_alphas_cumprod(NoiseSchedule().alphas_cumprod)
        g = torch.Generator().manual_seed(seed)
        total = 0.0
        for t in (50, 300, 600, 900):
            noise = torch.randn(x0.shape, generator=g)
            tt = torch.tensor([t])
            x_t = terms.add_noise(x0, noise, tt)
            out = transformer(x_t, tt, embeds, mask)
            total += float(diffusion_loss(terms, out, x0, x_t, noise, tt)[0].mean())
    return total / 4
