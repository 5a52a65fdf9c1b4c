"""Conditioning of the inpaint / image-to-video / video-to-video pipeline.

A *source* says, frame by frame, which pixels are known and which are to be generated:
``source(a, b) -> (pixels, mask)`` for frames ``a .. b-1``, pixels (1, 3, n, H, W) in [-1, 1],
mask (1, 1, n, H, W) with 1 = generate and 0 = keep. Image-to-video keeps the start image(s) at
the start and the end image(s) at the end; video-to-video keeps nothing (the denoise strength
decides how much of the input survives) but its pixels give the initial latents.

The VAE turns a source into :class:`InpaintCondition` (all latents scaled by the VAE's
``scaling_factor``, i.e. in the DiT's space):

- 12-channel (v3 InP) models read ``mask_latents`` = VAE(mask tiled to 3 channels, values 0/1)
  and ``masked_latents`` = VAE(pixels with the generated region set to -1), concatenated after
  the noisy latents;
- 4-channel models are steered by blending: after every step the kept region is replaced by the
  input's latents noised to the current level (``video_latents`` and ``latent_mask``, the pixel
  mask resized trilinearly to the latent grid).

Encoding runs unit by unit in the VAE's own temporal units (a lone first frame for odd lengths,
then ``mini_batch_encoder``-frame slices, which the slice VAE encodes independently), so pixels
are only ever built for one slice at a time, and a unit identical to the previous one (e.g. the
all-generated slices of a long image-to-video clip) reuses its latents instead of being encoded
again. Latents use the posterior mode (the reference samples it with the global RNG, which makes
its conditioning unseeded; the mode is the deterministic centre of that distribution).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..progress import ProgressFn

Source = Callable[[int, int], tuple]


@dataclass
class InpaintCondition:
    """What the DiT (12-channel) or the blending loop (4-channel) needs; all in DiT space."""

    mask_latents: torch.Tensor | None = None    # (B, 4, L, h, w), 12-channel models
    masked_latents: torch.Tensor | None = None  # (B, 4, L, h, w), 12-channel models
    video_latents: torch.Tensor | None = None   # (B, 4, L, h, w), 4-channel blend / v2v init
    latent_mask: torch.Tensor | None = None     # (B, 1, L, h, w), 1 = generate

    def inpaint_latents(self) -> torch.Tensor | None:
        """The 8 extra DiT input channels ``[mask, masked video]`` (12-channel models)."""
        if self.mask_latents is None:
            return None
        return torch.cat([self.mask_latents, self.masked_latents], dim=1)


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(k, 3, h, w) or (3, h, w) in [0, 1] -> (k, 3, height, width): scaled to cover the target,
    centre-cropped (aspect kept, unlike a plain resize)."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"an image must be a (3, H, W) or (k, 3, H, W) tensor with RGB channels first, "
                         f"got shape {tuple(image.shape)}")
    image = image.float()
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    image = F.interpolate(image, size=(new_h, new_w), mode="bicubic", antialias=True,
                          align_corners=False).clamp(0, 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[:, :, top:top + height, left:left + width]


def image_to_video_source(num_frames: int, width: int, height: int,
                          start: torch.Tensor | None = None,
                          end: torch.Tensor | None = None) -> Source:
    """Keep ``start`` (k images, (k, 3, H, W) in [0, 1]) as the first k frames and ``end`` as the
    last frames; everything else is generated. With neither, every frame is generated (the
    12-channel model's text-to-video input). Unknown frames show the first start image, as in the
    reference (they are masked out either way)."""
    start = None if start is None else fit_image(start, width, height) * 2 - 1
    end = None if end is None else fit_image(end, width, height) * 2 - 1
    n_start = 0 if start is None else start.shape[0]
    n_end = 0 if end is None else end.shape[0]
    if n_start + n_end > num_frames:
        raise InputError(f"{n_start} start and {n_end} end images do not fit into {num_frames} frames; "
                         f"ask for more frames or pass fewer images")
    fill = start[:1] if start is not None else torch.full((1, 3, height, width), -1.0)

    def source(a: int, b: int):
        frames, mask = [], []
        for i in range(a, b):
            if i < n_start:
                frames.append(start[i:i + 1]), mask.append(0.0)
            elif i >= num_frames - n_end:
                j = i - (num_frames - n_end)
                frames.append(end[j:j + 1]), mask.append(0.0)
            else:
                frames.append(fill), mask.append(1.0)
        pixels = torch.cat(frames).transpose(0, 1)[None]
        mask = torch.tensor(mask).view(1, 1, -1, 1, 1).expand(1, 1, b - a, height, width)
        return pixels, mask

    return source


def video_source(video: torch.Tensor, width: int, height: int) -> Source:
    """Video-to-video: ``video`` (3, F, H, W) or (1, 3, F, H, W) in [0, 1]; every frame generated."""
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise InputError(f"video-to-video takes one video, got a batch of {video.shape[0]}")
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError(f"the input video must be a (3, frames, H, W) tensor in [0, 1], got shape "
                         f"{tuple(video.shape)}")

    def source(a: int, b: int):
        pixels = fit_image(video[:, a:b].transpose(0, 1), width, height) * 2 - 1
        pixels = pixels.transpose(0, 1)[None]
        return pixels, torch.ones(1, 1, b - a, height, width)

    return source


def all_generated_condition(vae, num_frames: int, width: int, height: int,
                            progress: ProgressFn | None = None) -> InpaintCondition:
    """What a 12-channel (InP) model reads when no frame is kept (text-to-video, video-to-video):
    the encoded all-ones mask and the encoded all -1 masked video, as the reference's text-to-video
    with an InP model. The units are constant, so only the first of each length is encoded."""
    return encode_source(vae, image_to_video_source(num_frames, width, height), num_frames,
                         vae.scaling_factor, want_mask=True, want_video=False, progress=progress)


def encode_units(vae, num_frames: int) -> list:
    """The VAE's independently encoded time windows as (start, stop) frame ranges: encoding
    each alone and concatenating equals encoding the clip (slice VAE: lone odd first frame, then
    8-frame slices; v2 MagViT: 9-frame chunks)."""
    return [(w.start, w.stop) for w in vae.encode_plan(num_frames)]


@torch.no_grad()
def encode_source(vae, source: Source, num_frames: int, scaling_factor: float,
                  want_mask: bool, want_video: bool, progress: ProgressFn | None = None,
                  latent_size: tuple | None = None) -> InpaintCondition:
    """Encode ``source`` into an :class:`InpaintCondition` (see the module docstring).

    ``want_mask``: build mask / masked-video latents (12-channel models). ``want_video``: build
    the input's own latents and the latent-grid mask (4-channel blending, v2v initial latents).
    """
    parts = {"mask": [], "masked": [], "video": [], "pixmask": []}
    previous = None  # (pixels, mask, latents) of the last unit, for reuse
    units = encode_units(vae, num_frames)
    for done, (a, b) in enumerate(units, 1):
        pixels, mask = source(a, b)
        reused = (previous is not None and pixels.shape == previous[0].shape
                  and torch.equal(pixels, previous[0]) and torch.equal(mask, previous[1]))
        if reused:
            latents = previous[2]
        else:
            latents = {}
            encode = lambda x: vae.encode(x).mode().float() * scaling_factor
            if want_mask:
                latents["mask"] = encode(mask.expand(-1, 3, -1, -1, -1))
                latents["masked"] = encode(torch.where(mask > 0.5, torch.full_like(pixels, -1.0), pixels))
            if want_video:
                latents["video"] = encode(pixels)
        for key, value in latents.items():
            parts[key].append(value)
        if want_video:
            # masks are per frame (start / end frames), so one value per frame is the whole mask
            parts["pixmask"].append(mask.float().mean(dim=(3, 4), keepdim=True))
        previous = (pixels, mask, latents)
        if progress is not None:
            progress(done, len(units))
    join = lambda key: torch.cat(parts[key], dim=2) if parts[key] else None
    condition = InpaintCondition(join("mask"), join("masked"), join("video"))
    if want_video:
        condition.latent_mask = latent_grid_mask(join("pixmask"), condition.video_latents.shape)
    return condition


def latent_grid_mask(pixel_mask: torch.Tensor, latent_shape) -> torch.Tensor:
    """Pixel mask (B, 1, F, H', W') -> (B, 1, L, h, w) on the latent grid, resized trilinearly
    with aligned corners over time (as the reference), then broadcast over space."""
    _, _, length, h, w = latent_shape
    mask = F.interpolate(pixel_mask.float(), size=(length, 1, 1), mode="trilinear", align_corners=True)
    return mask.expand(-1, -1, -1, h, w).contiguous()
