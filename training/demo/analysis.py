"""Read a clip of the synthetic world back into attributes with simple computer vision.

The evaluator uses this on generated clips: background from the frame border, the shape as the
pixels far from the background, its colour by nearest palette entry, its kind by how much of its
bounding box it fills, and its motion from the centroid track.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .world import BACKGROUNDS, COLORS

# Fill ratio (area / bounding-box area): square 1.0, circle pi/4 = 0.785, triangle 0.5.
SQUARE_MIN_FILL = 0.89
CIRCLE_MIN_FILL = 0.64
FOREGROUND_DISTANCE = 60.0
MIN_AREA = 6


@dataclass
class ClipReading:
    background: Optional[str]
    color: Optional[str]
    shape: Optional[str]
    motion: Optional[str]


def _nearest(value: np.ndarray, palette: dict) -> str:
    names = list(palette)
    distances = [np.linalg.norm(value - np.array(palette[n], dtype=np.float32)) for n in names]
    return names[int(np.argmin(distances))]


def _border(frame: np.ndarray) -> np.ndarray:
    return np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]], axis=0)


def read_clip(frames: np.ndarray) -> ClipReading:
    """frames: uint8 (F, H, W, 3). Attributes that cannot be read come back as None."""
    frames = frames.astype(np.float32)
    background = np.median(np.concatenate([_border(f) for f in frames]), axis=0)
    masks = np.linalg.norm(frames - background, axis=-1) > FOREGROUND_DISTANCE
    areas = masks.reshape(len(frames), -1).sum(1)
    visible = [i for i in range(len(frames)) if areas[i] >= MIN_AREA]
    if len(visible) < 2:
        return ClipReading(_nearest(background, BACKGROUNDS), None, None, None)

    pixels = np.concatenate([frames[i][masks[i]] for i in visible])
    color = _nearest(np.median(pixels, axis=0), COLORS)

    fills = []
    centroids = []
    for i in visible:
        ys, xs = np.nonzero(masks[i])
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(areas[i] / box)
        centroids.append((xs.mean(), ys.mean()))
    fill = float(np.median(fills))
    shape = "square" if fill >= SQUARE_MIN_FILL else "circle" if fill >= CIRCLE_MIN_FILL else "triangle"

    (x0, y0), (x1, y1) = centroids[0], centroids[-1]
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 1.0:
        motion = None
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return ClipReading(_nearest(background, BACKGROUNDS), color, shape, motion)
