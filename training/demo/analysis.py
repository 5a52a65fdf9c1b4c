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

    palette = np.array(COLORS[color], dtype=np.float32)
    votes = [_shape(frames[i], background, palette) for i in visible]
    shape = max(SHAPES, key=votes.count)  # ties go to the earlier of SHAPES

    centroids = []
    for i in visible:
        ys, xs = np.nonzero(masks[i])
        centroids.append((xs.mean(), ys.mean()))

    (x0, y0), (x1, y1) = centroids[0], centroids[-1]
    dx, dy = x1 - x0, y1 - y0
    if max(abs(dx), abs(dy)) < 1.0:
        motion = None
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return ClipReading(_nearest(background, BACKGROUNDS), color, shape, motion)
