"""Aspect-ratio and frame-count buckets (the spec's section 3.3).

Spatial: every sample goes to the bucket whose ratio (height / width) in ``ASPECT_RATIO_512`` is
closest to its own; bucket sizes are scaled from the 512 table to the run's ``sample_size`` and
floored to multiples of 16 (so latents stay divisible by the patch size). Temporal: a batch is cut
to a multiple of the VAE slice ``interval`` (8 for the slice VAE), images are one frame.
"""

from __future__ import annotations

import math

# ratio (h / w) -> (height, width) at 512 px
ASPECT_RATIO_512 = {
    0.25: (256, 1024), 0.26: (256, 992), 0.27: (256, 960), 0.28: (256, 928), 0.32: (288, 896),
    0.33: (288, 864), 0.35: (288, 832), 0.4: (320, 800), 0.42: (320, 768), 0.48: (352, 736),
    0.5: (352, 704), 0.52: (352, 672), 0.57: (384, 672), 0.6: (384, 640), 0.68: (416, 608),
    0.72: (416, 576), 0.78: (448, 576), 0.82: (448, 544), 0.88: (480, 544), 0.94: (480, 512),
    1.0: (512, 512), 1.07: (512, 480), 1.13: (544, 480), 1.21: (544, 448), 1.29: (576, 448),
    1.38: (576, 416), 1.46: (608, 416), 1.67: (640, 384), 1.75: (672, 384), 2.0: (704, 352),
    2.09: (736, 352), 2.4: (768, 320), 2.5: (800, 320), 2.89: (832, 288), 3.0: (864, 288),
    3.11: (896, 288), 3.62: (928, 256), 3.75: (960, 256), 3.88: (992, 256), 4.0: (1024, 256),
}


def closest_ratio(height: int, width: int) -> float:
    aspect = height / width
    return min(ASPECT_RATIO_512, key=lambda ratio: abs(ratio - aspect))


def bucket_size(ratio: float, sample_size: int) -> tuple[int, int]:
    """The (height, width) of a bucket for a run trained at ``sample_size`` instead of 512."""
    h, w = ASPECT_RATIO_512[ratio]
    scale = sample_size / 512
    return max(16, int(h * scale) // 16 * 16), max(16, int(w * scale) // 16 * 16)


def frame_bucket(lengths, interval: int, max_frames: int) -> int:
    """The frame count of a batch: the shortest member floored to a multiple of ``interval``,
    capped at ``max_frames``; images (length 1) make a 1-frame batch. When ``max_frames`` is one
    more than a multiple (25 = 1 + 3 x 8: the VAE's lone-first-frame path), batches keep that form."""
    shortest = min(min(lengths), max_frames)
    if shortest <= 1:
        return 1
    lead = 1 if max_frames % interval == 1 else 0
    return max(interval + lead, (shortest - lead) // interval * interval + lead)


def random_frame_crop(max_frames: int, interval: int, generator) -> int:
    """The reference's ``random_frame_crop``: the full ``max_frames`` with probability 0.9, else one
    of the shorter multiples of ``interval`` uniformly."""
    import torch

    lead = 1 if max_frames % interval == 1 else 0
    choices = list(range(interval + lead, max_frames + 1, interval))
    if len(choices) <= 1 or torch.rand((), generator=generator).item() < 0.9:
        return max_frames
    return choices[int(torch.randint(len(choices) - 1, (), generator=generator))]


def resize_crop_size(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Size to resize (height, width) to so it covers (target_h, target_w) keeping aspect
    (shorter-side fit); a center crop to the target follows."""
    scale = max(target_h / height, target_w / width)
    return max(target_h, math.ceil(height * scale)), max(target_w, math.ceil(width * scale))
