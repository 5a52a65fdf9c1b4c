"""Shared pieces of the training tests: a tiny on-disk dataset and in-process CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
