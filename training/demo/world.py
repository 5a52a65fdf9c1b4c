"""A synthetic video world: coloured shapes moving over plain backgrounds, with captions.

Every clip is a pure function of its attributes and a seed, so the data, the held-out split and
the evaluation are reproducible anywhere. Captions are built from the attributes only
("a red circle moves to the left on a gray background"), which lets the evaluator check a
generated clip against its prompt with simple computer vision (see ``analysis.py``).

Rendering is numpy only: shapes are drawn with 4x4 supersampled coverage so edges are smooth,
which the small VAE reconstructs far better than aliased stair-steps.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 200, 70),
    "blue": (40, 90, 235),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
}
BACKGROUNDS = {
    "black": (12, 12, 12),
    "gray": (120, 120, 120),
    "purple": (90, 40, 110),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
}

SUPERSAMPLE = 4
RADIUS = (0.14, 0.19)  # shape radius range, a fraction of the shorter side
SQUARE_HALF_SIDE = 0.886  # times r: the square has the circle's area
TRIANGLE_HALF_HEIGHT = 1.15  # times r: the triangle is inscribed in the square of this half-side


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        return f"a {self.color} {self.shape} {MOTIONS[self.motion]} on a {self.background} background"


def all_scenes() -> list[Scene]:
    return [Scene(c, s, m, b) for c, s, m, b in itertools.product(COLORS, SHAPES, MOTIONS, BACKGROUNDS)]


def held_out_split(seed: int = 0, fraction: float = 0.15) -> tuple[list[Scene], list[Scene]]:
    """Split scenes so that held-out (colour, shape, motion) triples never appear in training,
    on any background: the evaluator then measures generalisation to unseen combinations."""
    triples = sorted(itertools.product(COLORS, SHAPES, MOTIONS))
    rng = random.Random(seed)
    held = set(rng.sample(triples, max(1, round(len(triples) * fraction))))
    train, test = [], []
    for scene in all_scenes():
        (test if (scene.color, scene.shape, scene.motion) in held else train).append(scene)
    return train, test


def area(shape: str, r: float) -> float:
    return {"circle": np.pi, "square": (2 * SQUARE_HALF_SIDE) ** 2,
            "triangle": 2 * TRIANGLE_HALF_HEIGHT ** 2}[shape] * r * r


def coverage(shape: str, cx: float, cy: float, r: float, height: int, width: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape of radius r centred on (cx, cy) (4x4 subpixel
    samples)."""
    s = SUPERSAMPLE
    offsets = (np.arange(s) + 0.5) / s
    ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    y, x = np.meshgrid(ys - cy, xs - cx, indexing="ij")
    if shape == "circle":
        inside = x * x + y * y <= r * r
    elif shape == "square":
        side = SQUARE_HALF_SIDE * r
        inside = (np.abs(x) <= side) & (np.abs(y) <= side)
    elif shape == "triangle":
        # upward isosceles triangle: apex at the top, base at the bottom
        h = TRIANGLE_HALF_HEIGHT * r
        inside = (y <= h) & (y >= -h) & (np.abs(x) <= (y + h) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def template(shape: str, pixel_area: float, cx: float, cy: float, height: int, width: int) -> np.ndarray:
    """Coverage of the shape with the given area whose centroid is (cx, cy): the reader's
    candidate for a blob of that area and centroid."""
    r = np.sqrt(pixel_area / area(shape, 1.0))
    # a triangle's centroid lies a third of its half-height below the centre of its box
    below = TRIANGLE_HALF_HEIGHT * r / 3 if shape == "triangle" else 0.0
    return coverage(shape, cx, cy - below, r, height, width)


def render_scene(scene: Scene, num_frames: int, height: int = 64, width: int = 64,
                 seed: int = 0) -> np.ndarray:
    """Render one scene as uint8 frames (F, H, W, 3). The seed picks size, path and speed."""
    rng = random.Random(f"{seed}-{scene.caption}")
    r = rng.uniform(*RADIUS) * min(height, width)
    margin = 1.2 * r + 1
    travel_x = (width - 2 * margin) * rng.uniform(0.7, 1.0)
    travel_y = (height - 2 * margin) * rng.uniform(0.7, 1.0)
    cx0 = rng.uniform(margin, width - margin)
    cy0 = rng.uniform(margin, height - margin)
    start, end = {
        "left": ((width - margin, cy0), (width - margin - travel_x, cy0)),
        "right": ((margin, cy0), (margin + travel_x, cy0)),
        "up": ((cx0, height - margin), (cx0, height - margin - travel_y)),
        "down": ((cx0, margin), (cx0, margin + travel_y)),
    }[scene.motion]
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    color = np.array(COLORS[scene.color], dtype=np.float32)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        t = i / max(1, num_frames - 1)
        cx = start[0] + (end[0] - start[0]) * t
        cy = start[1] + (end[1] - start[1]) * t
        alpha = coverage(scene.shape, cx, cy, r, height, width)[..., None]
        frames[i] = np.clip(background * (1 - alpha) + color * alpha + 0.5, 0, 255).astype(np.uint8)
    return frames


def render_video(scenes: list[Scene], frames_per_scene: list[int], height: int = 64, width: int = 64,
                 seed: int = 0) -> np.ndarray:
    """Concatenate scenes with hard cuts (a raw video for the preprocessing chain)."""
    parts = [render_scene(scene, n, height, width, seed=seed * 1000 + i)
             for i, (scene, n) in enumerate(zip(scenes, frames_per_scene))]
    return np.concatenate(parts, axis=0)
