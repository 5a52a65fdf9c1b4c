"""Motion score: how fast the picture moves, in percent of the frame diagonal per second.

OpenCV's Farnebäck flow is measured between *adjacent* frames on grayscale frames scaled to at
most ``WORK_SIDE`` pixels on their longer side. Each pair's mean flow magnitude is divided by
the working diagonal and multiplied by the frame rate; the clip's score is the median over
``PAIRS`` pairs spread through the clip (a flash or a stray frame moves one pair, not the
median).

Why not the reference's flow between frames sampled at 2 fps: half a second apart, a textured
pan moves further than the flow can follow and periodic content aliases, so the score stops
following the speed (measured 1.48, 1.81, 1.35, 1.14, 1.75 for 1.5 ... 9 px per frame). Nearby
frames keep displacements small; the diagonal and the frame rate make the score the same for
the same motion at any resolution and frame rate. A clip crossing its whole diagonal in ten
seconds scores 10. The flow follows up to about 12 px per frame at the working size (a score of
100 at 24 fps, 50 at 12 fps); faster motion is underestimated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easyanimate_core.video_io import iter_frames, probe_video

WORK_SIDE = 256  # longer side of the frames the flow runs on
PAIRS = 8  # frame pairs per clip
MIN_MOTION = 1.0  # default bounds, in % of the diagonal per second: a still H.264 shot scores ~0.01,
MAX_MOTION = 100.0  # a pan of 1.5 px / frame over a 256x144 frame at 24 fps ~12, 9 px / frame ~74


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    height, width = frame.shape[:2]
    scale = min(1.0, WORK_SIDE / max(height, width))
    if scale < 1:
        frame = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def farneback_magnitude(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean flow magnitude between two grayscale frames, in their pixels."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(previous, current, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return float(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).mean())


def pair_starts(num_frames: int, count: int = PAIRS) -> list[int]:
    """First frames of up to ``count`` adjacent pairs ``(i, i + 1)`` spread evenly over the clip."""
    last = num_frames - 2
    if last < 0:
        return []
    return sorted({round(k * last / max(count - 1, 1)) for k in range(count)})


def motion_score(path) -> float:
    """Median over adjacent frame pairs of the flow speed, in % of the frame diagonal per second."""
    info = probe_video(path)
    starts = pair_starts(info.num_frames)
    wanted = set(starts) | {s + 1 for s in starts}
    frames = {}
    for index, frame in iter_frames(path, end=max(wanted, default=0) + 1):
        if index in wanted:
            frames[index] = _gray(frame)
    speeds = []
    for start in starts:
        if start in frames and start + 1 in frames:  # a header can promise frames the file lacks
            pair = frames[start], frames[start + 1]
            diagonal = float(np.hypot(*pair[0].shape))
            speeds.append(farneback_magnitude(*pair) * info.fps / diagonal * 100)
    if not speeds:
        raise ValueError(f"{path} has fewer than two decodable frames; the motion score needs a pair of frames")
    return round(float(np.median(speeds)), 4)


def score_clip(record: dict, root: Path, low: float, high: float) -> dict:
    score = motion_score(root / record["file_path"])
    out = {**record, "motion_score": score}
    if score <= low:
        out["drop"] = "motion_low"
    elif score >= high:
        out["drop"] = "motion_high"
    return out
