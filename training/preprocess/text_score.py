"""Text score: the fraction of the frame area covered by text, on a few sampled frames.

Clips with burned-in captions, logos or subtitles teach the model to draw text, so the pipeline
drops clips above a small area (1% by default, as in the EasyAnimate paper; the reference
scripts use 2%). Two detectors:

- ``opencv`` (default, no weights): ink is what a morphological top-hat (bright ink) or black-hat
  (dark ink) lifts more than ``contrast`` grey levels above its surroundings; connected blobs of
  ink are glyph candidates when their height, aspect, fill and stroke width (thin relative to
  their height: strokes, not blobs) look like a letter. Candidates of the same ink level,
  similar height, a common centre line and letter-sized gaps are chained; chains of at least
  ``min_chars`` glyphs most of which sit on one baseline are text lines, and their boxes are the
  text area. Measured precision/recall on synthetic frames: ``bench/bench_preprocess.py``.
- ``easyocr``: EasyOCR's CRAFT detector (as the reference) when the ``easyocr`` package is
  installed and the user gives a local folder with ``craft_mlt_25k.pth``; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import read_sampled_frames

TextAreaFn = Callable[[np.ndarray], float]  # rgb uint8 (H, W, 3) -> covered fraction in [0, 1]


class OpenCVTextDetector:
    def __init__(self, min_chars: int = 3, min_height: int = 5, min_height_fraction: float = 1 / 40,
                 max_height_fraction: float = 0.5,
                 contrast: int = 60, max_stroke: float = 0.5, ink_tolerance: float = 25):
        self.min_chars = min_chars
        self.min_height = min_height
        self.min_height_fraction = min_height_fraction
        self.max_height_fraction = max_height_fraction
        self.contrast = contrast
        self.max_stroke = max_stroke
        self.ink_tolerance = ink_tolerance

    def glyphs(self, gray: np.ndarray) -> list[tuple[int, int, int, int, float]]:
        """Glyph-like blobs of ink as (x, y, w, h, mean grey level), bright and dark ink separately."""
        import cv2

        height, width = gray.shape
        size = max(7, min(height, width) // 16 | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
        shortest = max(self.min_height, self.min_height_fraction * height)
        found = []
        for operation in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):
            ink = (cv2.morphologyEx(gray, operation, kernel) > self.contrast).astype(np.uint8)
            count, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
            # the widest stroke of each component: twice its largest distance to the background
            stroke = np.zeros(count, np.float32)
            np.maximum.at(stroke, labels.ravel(), cv2.distanceTransform(ink, cv2.DIST_L2, 3).ravel())
            level = np.bincount(labels.ravel(), weights=gray.ravel(), minlength=count) / np.maximum(stats[:, 4], 1)
            for (x, y, w, h, area), half_stroke, grey in zip(stats[1:], stroke[1:], level[1:]):
                if not shortest <= h <= self.max_height_fraction * height or not 0.08 <= w / h <= 2.5:
                    continue
                # a lone upright stroke ('l', 'I', '1': antialiased fonts draw them solid) is a glyph
                solid_limit = 1.0 if w <= 0.35 * h else 0.85
                if not 0.1 <= area / (w * h) <= solid_limit or 2 * half_stroke > self.max_stroke * h:
                    continue  # not glyph-like: too sparse, too solid, or a blob rather than strokes
                found.append((int(x), int(y), int(w), int(h), float(grey)))
        return found

    def lines(self, glyphs) -> list[tuple[int, int, int, int]]:
        """Chain glyphs of one ink level into text lines: similar height, a common centre line,
        letter-sized gaps. Boxes of chains of at least ``min_chars`` glyphs on a baseline."""
        count = len(glyphs)
        parent = list(range(count))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        order = sorted(range(count), key=lambda i: glyphs[i][0])
        for a, i in enumerate(order):
            xi, yi, wi, hi, gi = glyphs[i]
            for j in order[a + 1:]:
                xj, yj, wj, hj, gj = glyphs[j]
                if xj - (xi + wi) > hi * 1.8:  # sorted by x: every later glyph is farther still
                    break
                tall, short = max(hi, hj), min(hi, hj)
                gap = max(xi, xj) - min(xi + wi, xj + wj)
                centre = abs((yi + hi / 2) - (yj + hj / 2))
                if (tall <= 1.8 * short and centre <= 0.4 * tall and -0.3 * tall <= gap <= 1.0 * tall
                        and abs(gi - gj) <= self.ink_tolerance):
                    parent[find(i)] = find(j)
        chains = {}
        for i in range(count):
            chains.setdefault(find(i), []).append(glyphs[i][:4])
        boxes = []
        for members in chains.values():
            if len(members) < self.min_chars or not self._on_a_baseline(members):
                continue
            x0 = min(x for x, _, _, _ in members)
            y0 = min(y for _, y, _, _ in members)
            x1 = max(x + w for x, _, w, _ in members)
            y1 = max(y + h for _, y, _, h in members)
            boxes.append((x0, y0, x1 - x0, y1 - y0))
        return boxes

    def _on_a_baseline(self, members) -> bool:
        """Most glyphs of a text line end on one baseline (descenders are the minority); chains
        of texture specks wander up and down."""
        bottoms = np.array([y + h for _, y, _, h in members], np.float32)
        tolerance = max(2.0, 0.15 * float(np.median([h for _, _, _, h in members])))
        aligned = int((np.abs(bottoms - np.median(bottoms)) <= tolerance).sum())
        return aligned >= self.min_chars and aligned >= 0.6 * len(members)

    def boxes(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        import cv2

        return self.lines(self.glyphs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)))

    def __call__(self, rgb: np.ndarray) -> float:
        covered = np.zeros(rgb.shape[:2], bool)
        for x, y, w, h in self.boxes(rgb):
            covered[y:y + h, x:x + w] = True
        return float(covered.mean())


class EasyOCRDetector:
    """EasyOCR's CRAFT text detector from a local model folder; area of its boxes and quads."""

    def __init__(self, model_dir, gpu: bool = False):
        try:
            import easyocr
        except ImportError as error:
            raise CheckpointError("--text-detector easyocr needs the easyocr package; install it with "
                                  "'pip install easyocr' (check it keeps your torch) or use the opencv "
                                  "detector") from error
        model_dir = Path(model_dir or "")
        if not (model_dir / "craft_mlt_25k.pth").is_file():
            raise CheckpointError(f"EasyOCR model folder {model_dir} has no craft_mlt_25k.pth; put the CRAFT "
                                  f"detector weights there and pass the folder as --text-model")
        self.reader = easyocr.Reader(["en"], gpu=gpu, recognizer=False, verbose=False,
                                     model_storage_directory=str(model_dir), download_enabled=False)

    def __call__(self, rgb: np.ndarray) -> float:
        import cv2

        horizontal, free = self.reader.detect(rgb)
        covered = np.zeros(rgb.shape[:2], np.uint8)
        for x0, x1, y0, y1 in horizontal[0]:
            covered[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)] = 1
        for quad in free[0]:
            cv2.fillPoly(covered, [np.asarray(quad, np.int32)], 1)
        return float(covered.mean())


def make_text_detector(name: str, model_dir=None, gpu: bool = False) -> TextAreaFn:
    if name == "opencv":
        return OpenCVTextDetector()
    if name == "easyocr":
        return EasyOCRDetector(model_dir, gpu=gpu)
    raise CheckpointError(f"unknown text detector {name!r}; expected opencv or easyocr")


def text_score(path, detector: TextAreaFn, num_frames: int = 3) -> float:
    """The largest text fraction over ``num_frames`` frames spread over the clip: a clip is as
    text-laden as its worst sampled frame (captions that come and go still count)."""
    return round(max(detector(frame) for frame in read_sampled_frames(path, num_frames)), 5)


def score_clip(record: dict, root: Path, detector: TextAreaFn, max_area: float, num_frames: int) -> dict:
    score = text_score(root / record["file_path"], detector, num_frames)
    out = {**record, "text_score": score}
    if score > max_area:
        out["drop"] = "text"
    return out
