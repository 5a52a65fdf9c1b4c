"""Rule-based camera-motion augmentation (AnimateDiff, MotionLoRA section): a clip is turned into
one with a known camera move by cropping a window that changes over time and resizing it back,
so a MotionLoRA can learn zoom or pan from a handful of reference videos.

Moves: ``zoom_in`` (the window shrinks towards the centre), ``zoom_out`` (it grows back to the
full frame), ``pan_left`` / ``pan_right`` / ``pan_up`` / ``pan_down`` (a fixed-size window slides
so the scene moves the other way, as when the camera turns). ``strength`` is the share of the
frame the move spans (0.25: the window is 75% of the frame and travels the remaining 25%).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from easyanimate_core.errors import InputError

MOVES = ("zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down")


def _window(move: str, s: float, strength: float, h: int, w: int) -> tuple[float, float, float, float]:
    """(top, left, height, width) of the crop at progress s in [0, 1]."""
    if move in ("zoom_in", "zoom_out"):
        shrink = strength * (s if move == "zoom_in" else 1.0 - s)
        ch, cw = h * (1 - shrink), w * (1 - shrink)
        return (h - ch) / 2, (w - cw) / 2, ch, cw
    ch, cw = h * (1 - strength), w * (1 - strength)
    travel_y, travel_x = h - ch, w - cw
    # the camera pans left: the window moves left, so the content drifts right in the output
    offsets = {"pan_left": (travel_y / 2, travel_x * (1 - s)), "pan_right": (travel_y / 2, travel_x * s),
               "pan_up": (travel_y * (1 - s), travel_x / 2), "pan_down": (travel_y * s, travel_x / 2)}
    top, left = offsets[move]
    return top, left, ch, cw


def camera_move(video: torch.Tensor, move: str, strength: float = 0.25) -> torch.Tensor:
    """Apply ``move`` to a clip (3, F, H, W); the output has the input's size."""
    if move not in MOVES:
        raise InputError(f"camera move {move!r} is not one of {', '.join(MOVES)}; pick one of those.")
    if not 0.0 < strength < 1.0:
        raise InputError(f"camera move strength must be between 0 and 1 (exclusive), got {strength}.")
    _, frames, h, w = video.shape
    out = torch.empty_like(video)
    for f in range(frames):
        s = f / (frames - 1) if frames > 1 else 0.0
        top, left, ch, cw = _window(move, s, strength, h, w)
        # sub-pixel window through an affine grid, so slow moves stay smooth
        theta = torch.tensor([[cw / w, 0.0, (2 * left + cw) / w - 1.0],
                              [0.0, ch / h, (2 * top + ch) / h - 1.0]], dtype=video.dtype)
        grid = F.affine_grid(theta[None], [1, 3, h, w], align_corners=False)
        out[:, f] = F.grid_sample(video[:, f][None], grid, mode="bilinear", padding_mode="border",
                                  align_corners=False)[0]
    return out


class CameraAugment:
    """Dataset transform: one of ``moves`` (uniformly, from the sample's generator) per clip."""

    def __init__(self, moves, strength: float = 0.25):
        self.moves = list(moves)
        bad = [m for m in self.moves if m not in MOVES]
        if not self.moves or bad:
            raise InputError(f"augment.camera_moves {self.moves} must list moves from {', '.join(MOVES)}.")
        self.strength = strength

    def __call__(self, video: torch.Tensor, generator) -> torch.Tensor:
        if video.shape[1] < 2:
            return video  # an image has no motion to add
        move = self.moves[int(torch.randint(len(self.moves), (), generator=generator))]
        return camera_move(video, move, self.strength)
