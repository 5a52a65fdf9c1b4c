"""Sliding temporal context windows over the latents.

The DiT's motion modules attend over every frame they are given, so memory and time grow with
the clip. For long clips each sampling step instead runs the model on overlapping windows of
``length`` latent frames and fuses the per-window predictions frame by frame with weights that
fall off towards a window's inner edges, so neighbouring windows blend instead of meeting at a
seam. Peak memory then depends on ``length``, not on the clip.

Fusion weights (per window, over its ``length`` frames):

- ``"pyramid"``: triangle ``min(i + 1, length - i)`` - the window centre dominates;
- ``"linear"``: 1 inside, linear ramps only across the overlapped frames (a cross-fade),
  no ramp at the clip's first and last frame;
- ``"flat"``: plain average of the windows that cover a frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError

FUSE_MODES = ("pyramid", "linear", "flat")


@dataclass(frozen=True)
class ContextWindows:
    """Options for windowed sampling; all counts are in latent frames (slice VAE: 1 latent
    frame = 4 video frames, plus the lone first frame of odd-length videos)."""

    length: int = 16
    overlap: int = 4
    fuse: str = "pyramid"

    def __post_init__(self):
        if self.length < 1:
            raise InputError(f"context window length must be at least 1 latent frame, got {self.length}")
        if not 0 <= self.overlap < self.length:
            raise InputError(f"context window overlap must be between 0 and length - 1 "
                             f"({self.length - 1}), got {self.overlap}; lower the overlap")
        if self.fuse not in FUSE_MODES:
            raise InputError(f"context window fusion {self.fuse!r} is unknown; choose one of "
                             f"{', '.join(FUSE_MODES)}")

    def windows(self, num_frames: int) -> list[range]:
        """Frame ranges covering ``0 .. num_frames - 1``; the last one ends exactly at the end."""
        if num_frames <= self.length:
            return [range(num_frames)]
        stride = self.length - self.overlap
        starts = list(range(0, num_frames - self.length, stride)) + [num_frames - self.length]
        return [range(s, s + self.length) for s in starts]

    def weights(self, window: range, num_frames: int) -> torch.Tensor:
        """Fusion weight of each frame of ``window`` (1-D float tensor, all > 0)."""
        n = len(window)
        index = torch.arange(n, dtype=torch.float32)
        if self.fuse == "flat":
            return torch.ones(n)
        if self.fuse == "pyramid":
            return torch.minimum(index + 1, n - index)
        # linear: ramps across the overlap, only on sides that have a neighbouring window
        ramp = max(self.overlap, 1)
        weight = torch.ones(n)
        if window.start > 0:
            weight = torch.minimum(weight, (index + 1) / (ramp + 1))
        if window.stop < num_frames:
            weight = torch.minimum(weight, (n - index) / (ramp + 1))
        return weight

    def plan(self, num_frames: int) -> list[tuple[range, torch.Tensor]]:
        """Each window with its *normalised* weights: for every frame the weights of the windows
        covering it sum to 1, so fusing is one multiply-add per window (computed once per clip
        length, not per step)."""
        windows = self.windows(num_frames)
        weights = [self.weights(w, num_frames) for w in windows]
        total = torch.zeros(num_frames)
        for window, weight in zip(windows, weights):
            total[window.start:window.stop] += weight
        return [(w, weight / total[w.start:w.stop]) for w, weight in zip(windows, weights)]


def fuse_windows(predict: Callable[[range], torch.Tensor], plan: list, like: torch.Tensor,
                 frame_dim: int = 2) -> torch.Tensor:
    """Run ``predict(window)`` (a prediction for the window's frames, frames on ``frame_dim``) on
    every window of ``plan`` (:meth:`ContextWindows.plan`, weights already on ``like``'s device)
    and return the weighted per-frame average, shaped like ``like``."""
    fused = torch.zeros_like(like)
    shape = [1] * like.ndim
    for window, weight in plan:
        shape[frame_dim] = len(window)
        fused.narrow(frame_dim, window.start, len(window)).addcmul_(predict(window), weight.view(shape))
    return fused
