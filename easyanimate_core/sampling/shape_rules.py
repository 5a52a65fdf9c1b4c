"""Which video shapes the pipeline makes: frame-count and size rules, latent shapes, and aspect
buckets for image-to-video.

The DiT patchifies 2x2 latent pixels and the VAE downsamples by its spatial factor (8x for the
releases, 4x for the shipped demo model), so pixel sizes must be multiples of twice that factor
(16, or 8). Frame counts must survive a VAE round trip: the slice VAE (v3) encodes an
optional lone first frame plus 8-frame slices, so only 1, 8k and 8k+1 frames decode back to the
same count; the frame rule is read from the VAE itself (``latent_frames`` / ``decoded_frames``),
so other VAEs bring their own rule. Inputs that break a rule are floored to the nearest valid
value and the adjustment is logged as one warning line (never silently).
"""

from __future__ import annotations

import logging

from ..errors import InputError
from . import buckets

log = logging.getLogger("easyanimate_core")

DIT_PATCH = 2  # every released EasyAnimate v1-v3 DiT patchifies 2x2 latent pixels


def valid_frames(frames: int, vae) -> bool:
    """True when ``frames`` decodes back to exactly ``frames`` frames through ``vae``."""
    return frames >= 1 and vae.decoded_frames(vae.latent_frames(frames)) == frames


def example_frame_counts(vae, upto: int = 40) -> list:
    """The valid frame counts up to ``upto``: used to word adjustment messages."""
    return [f for f in range(1, upto + 1) if valid_frames(f, vae)]


def adjust_frames(frames: int, vae) -> int:
    """The largest valid frame count <= ``frames``; logs the change when there is one."""
    frames = int(frames)
    if frames < 1:
        raise InputError(f"the frame count must be at least 1, got {frames}; ask for 1 frame (an image) "
                         f"or more")
    valid = frames
    while not valid_frames(valid, vae):
        valid -= 1
    if valid != frames:
        counts = ", ".join(map(str, example_frame_counts(vae, upto=20)))
        log.warning("video length adjusted from %d to %d frames: this VAE only decodes frame counts "
                    "%s, ... unchanged", frames, valid, counts)
    return valid


def size_multiple(vae) -> int:
    """Pixel sizes must be multiples of this: the VAE's downsampling times the DiT's patch."""
    return vae.spatial_factor * DIT_PATCH


def adjust_size(width: int, height: int, vae) -> tuple:
    """(width, height) floored to multiples of :func:`size_multiple`; logs the change when there
    is one."""
    multiple, factor = size_multiple(vae), vae.spatial_factor
    width, height = int(width), int(height)
    if width < multiple or height < multiple:
        raise InputError(f"the video size must be at least {multiple}x{multiple} pixels, got "
                         f"{width}x{height}; choose a larger width and height")
    new_w, new_h = width // multiple * multiple, height // multiple * multiple
    if (new_w, new_h) != (width, height):
        log.warning("video size adjusted from %dx%d to %dx%d: width and height must be multiples of "
                    "%d (this VAE's %dx downsampling times the DiT's %dx%d patches)",
                    width, height, new_w, new_h, multiple, factor, DIT_PATCH, DIT_PATCH)
    return new_w, new_h


def latent_shape(vae, frames: int, width: int, height: int, batch: int = 1) -> tuple:
    """Shape of the latents that decode to ``frames`` frames of ``width`` x ``height``."""
    scale = vae.spatial_factor
    return (batch, vae.latent_channels, vae.latent_frames(frames), height // scale, width // scale)


def bucket_size(width: int, height: int, base_resolution: int) -> tuple:
    """The (width, height) of the published aspect bucket nearest ``width`` x ``height``, scaled
    to ``base_resolution`` (image-to-video sizes the video after its start image this way, as the
    reference's nodes do)."""
    bucket_h, bucket_w = buckets.bucket_size(buckets.closest_ratio(height, width), base_resolution)
    return bucket_w, bucket_h
