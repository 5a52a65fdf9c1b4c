"""Aspect-ratio and frame-count buckets (EasyAnimate's bucketing).

Spatial: every sample goes to the bucket whose ratio (height / width) in ``ASPECT_RATIO_512`` is
closest to its own; bucket sizes are scaled from the 512 table to the run's ``sample_size`` and
floored to multiples of 16 (so latents stay divisible by the patch size). Temporal: a batch is cut
to a multiple of the VAE slice ``interval`` (8 for the slice VAE), images are one frame.
"""

from __future__ import annotations

import math

from easyanimate_core.sampling.buckets import ASPECT_RATIO_512, bucket_size, closest_ratio  # noqa: F401


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
