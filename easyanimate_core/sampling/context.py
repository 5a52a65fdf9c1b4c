"""Sliding temporal context windows over the latents.

The DiT's motion modules attend over every frame they are given, so memory and time grow with
the clip. For long clips each sampling step instead runs the model on windows of ``length``
latent frames and fuses the per-window predictions frame by frame with weights that fall off
towards a window's edges, so neighbouring windows blend instead of meeting at a seam. Peak memory
then depends on ``length``, not on the clip.

Contiguous windows alone agree only with their neighbours: a model trained on short clips plays
its whole motion inside every window, and the clip drifts back and forth at the seams. With
``strides`` > 1 the plan also holds *strided* windows (frames ``a, a + s, a + 2s, ...`` for
s = 2, 4, ... while ``length * s`` fits in the clip), as AnimateDiff-Evolved's ``context_stride``:
frames far apart share a window, so the motion is laid out across the whole clip while the
contiguous windows keep it smooth from frame to frame.

Fusion weights (per window, over its ``length`` positions):

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

Window = tuple  # latent frame indices, ascending


@dataclass(frozen=True)
class ContextWindows:
    """Options for windowed sampling; all counts are in latent frames (slice VAE: 1 latent
    frame = 4 video frames, plus the lone first frame of odd-length videos)."""

    length: int = 16
    overlap: int = 4
    fuse: str = "pyramid"
    strides: int = 2  # 1: contiguous windows only; n: also strides 2, 4, ... 2^(n-1)

    def __post_init__(self):
        if self.length < 1:
            raise InputError(f"context window length must be at least 1 latent frame, got {self.length}")
        if not 0 <= self.overlap < self.length:
            raise InputError(f"context window overlap must be between 0 and length - 1 "
                             f"({self.length - 1}), got {self.overlap}; lower the overlap")
        if self.fuse not in FUSE_MODES:
            raise InputError(f"context window fusion {self.fuse!r} is unknown; choose one of "
                             f"{', '.join(FUSE_MODES)}")
        if not 1 <= self.strides <= 8:
            raise InputError(f"context window strides must be from 1 (contiguous windows only) to 8, got "
                             f"{self.strides}")

    def windows(self, num_frames: int) -> list[Window]:
        """Windows covering ``0 .. num_frames - 1``: contiguous ones (the last ends exactly at the
        end), then the strided ones of every stride that fits."""
        if num_frames <= self.length:
            return [tuple(range(num_frames))]
        result = []
        for level in range(self.strides):
            stride = 2 ** level
            span = self.length * stride  # frames one strided window reaches over
            if span > num_frames:
                break
            step = (self.length - self.overlap) * stride
            starts = list(range(0, num_frames - span, step)) + [num_frames - span]
            for start in starts:
                for offset in range(stride):  # interleaved windows cover every frame of the span
                    result.append(tuple(range(start + offset, start + span, stride)))
        # the last start can land on a window an earlier start plus offset already made: once each,
        # or it would cost a DiT pass and weigh double in the fusion
        return list(dict.fromkeys(result))

    def weights(self, window: Window, num_frames: int) -> torch.Tensor:
        """Fusion weight of each position of ``window`` (1-D float tensor, all > 0)."""
        n = len(window)
        index = torch.arange(n, dtype=torch.float32)
        if self.fuse == "flat":
            return torch.ones(n)
        if self.fuse == "pyramid":
            return torch.minimum(index + 1, n - index)
        # linear: ramps across the overlap, only on sides that have a neighbouring window
        ramp = max(self.overlap, 1)
        weight = torch.ones(n)
        if window[0] > 0:
            weight = torch.minimum(weight, (index + 1) / (ramp + 1))
        if window[-1] < num_frames - 1:
            weight = torch.minimum(weight, (n - index) / (ramp + 1))
        return weight

    def plan(self, num_frames: int) -> list[tuple[Window, torch.Tensor]]:
        """Each window with its *normalised* weights: for every frame the weights of the windows
        covering it sum to 1, so fusing is one multiply-add per window (computed once per clip
        length, not per step)."""
        windows = self.windows(num_frames)
        weights = [self.weights(w, num_frames) for w in windows]
        total = torch.zeros(num_frames)
        for window, weight in zip(windows, weights):
            total[list(window)] += weight
        return [(w, weight / total[list(w)]) for w, weight in zip(windows, weights)]


def _contiguous(window: Window) -> bool:
    return window[-1] - window[0] + 1 == len(window)


def take_frames(tensor: torch.Tensor, window: Window, frame_dim: int = 2) -> torch.Tensor:
    """The frames ``window`` of ``tensor``: a view for contiguous windows, a gather otherwise."""
    if _contiguous(window):
        return tensor.narrow(frame_dim, window[0], len(window))
    return tensor.index_select(frame_dim, torch.tensor(window, device=tensor.device))


def fuse_windows(predict: Callable[[Window], torch.Tensor], plan: list, like: torch.Tensor,
                 frame_dim: int = 2) -> torch.Tensor:
    """Run ``predict(window)`` (a prediction for the window's frames, frames on ``frame_dim``) on
    every window of ``plan`` (:meth:`ContextWindows.plan`, weights already on ``like``'s device)
    and return the weighted per-frame average, shaped like ``like``."""
    fused = torch.zeros_like(like)
    shape = [1] * like.ndim
    for window, weight in plan:
        shape[frame_dim] = len(window)
        if _contiguous(window):  # added in place through a view: no index tensor, no copy
            take_frames(fused, window, frame_dim).addcmul_(predict(window), weight.view(shape))
        else:
            fused.index_add_(frame_dim, torch.tensor(window, device=like.device), predict(window) * weight.view(shape))
    return fused
