"""Read a clip of the synthetic world back into attributes with simple computer vision.

The evaluator uses this on generated clips: background from the frame border, the shape as the
pixels far from the background, its colour by nearest palette entry, its motion from the centroid
track, and its kind by which of the world's shapes, given the blob's area and centroid, overlaps
it best. That fit reads through the blur a VAE leaves on edges (shapes blurred by a Gaussian of one
pixel still read right, tests/test_demo_world.py), where the thresholded fill ratio it replaced
took softened squares and triangles for circles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import BACKGROUNDS, COLORS, SHAPES, template

FOREGROUND_DISTANCE = 60.0
MIN_AREA = 6


@dataclass
class ClipReading:
    background: str | None
    color: str | None
    shape: str | None
    motion: str | None


def _nearest(value: np.ndarray, palette: dict) -> str:
    names = list(palette)
    distances = [np.linalg.norm(value - np.array(palette[n], dtype=np.float32)) for n in names]
    return names[int(np.argmin(distances))]


def _border(frame: np.ndarray) -> np.ndarray:
    return np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]], axis=0)


def _shape(frame: np.ndarray, background: np.ndarray, color: np.ndarray) -> str | None:
    """The shape whose template, with the blob's area and centroid, has the highest soft IoU with
    the blob. Coverage is the pixel's share of the way from background to shape colour, so area
    and centroid survive blur."""
    axis = color - background
    alpha = np.clip((frame - background) @ axis / (axis @ axis), 0.0, 1.0)
    height, width = alpha.shape
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres, as the renderer samples them
    mass = alpha.sum()
    if mass < 1.0:  # nothing of the shape's colour: no vote
        return None
    cx, cy = (alpha * xs).sum() / mass, (alpha * ys).sum() / mass

    def iou(shape):
        fit = template(shape, mass, cx, cy, height, width)
        return np.minimum(alpha, fit).sum() / np.maximum(alpha, fit).sum()

    return max(SHAPES, key=iou)


@dataclass
class Foreground:
    """What differs from the background in each frame of a clip."""
    background: np.ndarray                 # RGB, the median of every frame's border
    masks: np.ndarray                      # (F, H, W) bool: pixels far from the background
    visible: list[int]                     # frames with at least MIN_AREA such pixels
    centroids: list[tuple[float, float]]   # (x, y) of each visible frame's mask


def foreground(frames: np.ndarray) -> Foreground:
    """frames: (F, H, W, 3), uint8 or float in 0..255."""
    frames = np.asarray(frames, dtype=np.float32)  # no copy when read_clip already converted
    background = np.median(np.concatenate([_border(f) for f in frames]), axis=0)
    masks = np.linalg.norm(frames - background, axis=-1) > FOREGROUND_DISTANCE
    visible = [i for i, mask in enumerate(masks) if mask.sum() >= MIN_AREA]
    centroids = []
    for i in visible:
        ys, xs = np.nonzero(masks[i])
        centroids.append((float(xs.mean()), float(ys.mean())))
    return Foreground(background, masks, visible, centroids)


def read_clip(frames: np.ndarray) -> ClipReading:
    """frames: uint8 (F, H, W, 3). Attributes that cannot be read come back as None."""
    frames = frames.astype(np.float32)
    fg = foreground(frames)
    background = _nearest(fg.background, BACKGROUNDS)
    if len(fg.visible) < 2:
        return ClipReading(background, None, None, None)

    pixels = np.concatenate([frames[i][fg.masks[i]] for i in fg.visible])
    color = _nearest(np.median(pixels, axis=0), COLORS)

    palette = np.array(COLORS[color], dtype=np.float32)
    votes = [_shape(frames[i], fg.background, palette) for i in fg.visible]
    votes = [v for v in votes if v is not None]
    shape = max(SHAPES, key=votes.count) if votes else None  # ties go to the earlier of SHAPES

    (x0, y0), (x1, y1) = fg.centroids[0], fg.centroids[-1]
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 1.0:
        motion = None
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return ClipReading(background, color, shape, motion)
