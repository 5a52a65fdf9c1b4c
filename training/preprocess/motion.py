"""Motion score: mean optical-flow magnitude (pixels) between frames sampled at 2 fps.

The default flow is OpenCV's Farnebäck with the reference's parameters on grayscale frames at the
clip's own resolution (the score is in pixels per half second, so thresholds depend on
resolution exactly as in the reference: 3 < score < 8). A learned flow model (RAFT or any
other) plugs in through :class:`TorchFlow` from a file the user supplies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import iter_frames, probe_video

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (rgb, rgb) uint8 -> (H, W, 2) flow
SAMPLE_FPS = 2.0


def farneback_flow(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    import cv2

    a = cv2.cvtColor(previous, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(current, cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


class TorchFlow:
    """A user-supplied flow network: a TorchScript file (``torch.jit.save``) or an exported
    program (``torch.export.save``, ``.pt2``), called as ``model(image1, image2)`` on float
    ``(1, 3, H, W)`` RGB in [-1, 1] with H, W padded to multiples of 8 (RAFT's convention), and
    returning flow ``(1, 2, H, W)`` or a list of refinements (the last one is used)."""

    def __init__(self, weights, device: str = "cpu"):
        import torch

        weights = Path(weights)
        if not weights.is_file():
            raise CheckpointError(f"flow model file {weights} does not exist; pass --flow-weights with a "
                                  f"TorchScript (.pt) or torch.export (.pt2) file of the flow network")
        try:
            if weights.suffix == ".pt2":
                self.model = torch.export.load(str(weights)).module()
            else:
                self.model = torch.jit.load(str(weights), map_location=device).eval()
        except Exception as error:
            raise CheckpointError(f"flow model file {weights} is not a TorchScript or torch.export program "
                                  f"({type(error).__name__}); export the network with torch.jit.save or "
                                  f"torch.export.save") from error
        self.device = device

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        height, width = previous.shape[:2]
        pad = (0, -width % 8, 0, -height % 8)

        def tensor(image):
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(self.device) / 127.5 - 1
            return F.pad(x, pad, mode="replicate")

        with torch.no_grad():
            flow = self.model(tensor(previous), tensor(current))
        if isinstance(flow, (list, tuple)):
            flow = flow[-1]
        return flow[0, :, :height, :width].permute(1, 2, 0).float().cpu().numpy()


def make_flow(name: str, weights: str | None = None, device: str = "cpu") -> FlowFn:
    if name == "farneback":
        return farneback_flow
    if name in ("raft", "torch"):
        if not weights:
            raise CheckpointError(f"--flow {name} needs --flow-weights: a local TorchScript/torch.export file "
                                  f"of the flow network (nothing is downloaded)")
        return TorchFlow(weights, device)
    raise CheckpointError(f"unknown flow method {name!r}; expected farneback, raft or torch")


def motion_score(path, flow: FlowFn = farneback_flow) -> float:
    """Mean flow magnitude over consecutive frames sampled at 2 fps (every ``fps / 2``-th frame;
    for clips too short for two samples, the first and last frame)."""
    info = probe_video(path)
    step = max(1, int(info.fps / min(SAMPLE_FPS, info.fps)))
    step = max(1, min(step, info.num_frames - 1))
    magnitudes, previous = [], None
    for _, frame in iter_frames(path, step=step):
        if previous is not None:
            f = flow(previous, frame)
            magnitudes.append(float(np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2).mean()))
        previous = frame
    if not magnitudes:
        raise ValueError(f"{path} has fewer than two decodable frames; motion needs at least two")
    return round(float(np.mean(magnitudes)), 5)


def score_clip(record: dict, root: Path, flow: FlowFn, low: float, high: float) -> dict:
    score = motion_score(root / record["file_path"], flow)
    out = {**record, "motion_score": score}
    if score <= low:
        out["drop"] = "motion_low"
    elif score >= high:
        out["drop"] = "motion_high"
    return out
