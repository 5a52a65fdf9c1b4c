"""Conditioning of the inpaint / image-to-video / video-to-video pipeline.

A *source* says, frame by frame, which pixels are known and which are to be generated:
``source(a, b) -> (pixels, mask)`` for frames ``a .. b-1``, pixels (1, 3, n, H, W) in [-1, 1],
mask (1, 1, n, H, W) with 1 = generate and 0 = keep. Image-to-video keeps the start image(s) at
the start and the end image(s) at the end; video-to-video keeps nothing (the denoise strength
decides how much of the input survives) but its pixels give the initial latents.

The VAE turns a source into :class:`InpaintCondition` (all latents scaled by the VAE's
``scaling_factor``, i.e. in the DiT's space):

- 12-channel (v3 InP) models read ``encoded_mask`` = VAE(mask tiled to 3 channels, values 0/1)
  and ``encoded_kept_frames`` = VAE(pixels with the generated region set to -1), concatenated
  after the noisy latents - the input they were trained on;
- 4-channel models are steered by blending: after every step the latents that decode to kept
  frames (``generate_mask`` 0) are replaced by ``video_latents`` noised to the current level.
  Each kept image is held as a *still*: the VAE unit that holds a kept latent is encoded with
  every frame showing that side's nearest kept image, so the held latent decodes to that image
  (a unit mixing start, end and blank frames would decode to their blend: the end frame of a
  16-frame clip came back as the start image).

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

    encoded_mask: torch.Tensor | None = None         # (B, 4, L, h, w) VAE(0/1 pixel mask), 12-channel
    encoded_kept_frames: torch.Tensor | None = None  # (B, 4, L, h, w) VAE(kept pixels, rest -1), 12-channel
    video_latents: torch.Tensor | None = None        # (B, 4, L, h, w) held latents (4-channel) / v2v input
    generate_mask: torch.Tensor | None = None        # (B, 1, L, h, w) latent grid, 1 = sampled, 0 = held

    def inpaint_latents(self) -> torch.Tensor | None:
        """The 8 extra DiT input channels ``[encoded mask, encoded kept frames]`` (12-channel)."""
        if self.encoded_mask is None:
            return None
        return torch.cat([self.encoded_mask, self.encoded_kept_frames], dim=1)


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


def kept_images(num_frames: int, width: int, height: int, start: torch.Tensor | None,
                end: torch.Tensor | None) -> tuple:
    """(start, end) images fitted to the size, in [-1, 1], (k, 3, H, W) or None; checks they fit."""
    start = None if start is None else fit_image(start, width, height) * 2 - 1
    end = None if end is None else fit_image(end, width, height) * 2 - 1
    n_start = 0 if start is None else start.shape[0]
    n_end = 0 if end is None else end.shape[0]
    if n_start + n_end > num_frames:
        raise InputError(f"{n_start} start and {n_end} end images do not fit into {num_frames} frames; "
                         f"ask for more frames or pass fewer images")
    return start, end


def image_to_video_source(num_frames: int, width: int, height: int,
                          start: torch.Tensor | None = None,
                          end: torch.Tensor | None = None) -> Source:
    """Keep ``start`` (k images, (k, 3, H, W) in [0, 1]) as the first k frames and ``end`` as the
    last frames; everything else is generated and shows -1 (what the 12-channel model's masked
    input holds there). With neither, every frame is generated (its text-to-video input)."""
    start, end = kept_images(num_frames, width, height, start, end)
    n_start = 0 if start is None else start.shape[0]
    n_end = 0 if end is None else end.shape[0]
    blank = torch.full((1, 3, height, width), -1.0)

    def source(a: int, b: int):
        frames, mask = [], []
        for i in range(a, b):
            if i < n_start:
                frames.append(start[i:i + 1]), mask.append(0.0)
            elif i >= num_frames - n_end:
                j = i - (num_frames - n_end)
                frames.append(end[j:j + 1]), mask.append(0.0)
            else:
                frames.append(blank), mask.append(1.0)
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
                  want_mask: bool, want_video: bool, progress: ProgressFn | None = None) -> InpaintCondition:
    """Encode ``source`` into an :class:`InpaintCondition` (see the module docstring).

    ``want_mask``: build the encoded mask / kept frames (12-channel models). ``want_video``: the
    source's own latents (video-to-video's initial latents)."""
    parts = {"encoded_mask": [], "encoded_kept_frames": [], "video_latents": []}
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
            if want_mask:
                latents["encoded_mask"] = _encode(vae, mask.expand(-1, 3, -1, -1, -1), scaling_factor)
                latents["encoded_kept_frames"] = _encode(
                    vae, torch.where(mask > 0.5, torch.full_like(pixels, -1.0), pixels), scaling_factor)
            if want_video:
                latents["video_latents"] = _encode(vae, pixels, scaling_factor)
        for key, value in latents.items():
            parts[key].append(value)
        previous = (pixels, mask, latents)
        if progress is not None:
            progress(done, len(units))
    return InpaintCondition(**{key: torch.cat(value, dim=2) if value else None for key, value in parts.items()})


def _encode(vae, pixels: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    return vae.encode(pixels).mode().float() * scaling_factor


def latent_frame_spans(vae, num_frames: int) -> list:
    """The video frames each latent frame decodes to, as (start, stop) ranges: an encode unit of
    n frames and m latents gives each of its latents n / m consecutive frames (slice VAE: the lone
    first frame -> 1 latent, each 8-frame slice -> 2 latents of 4 frames)."""
    spans = []
    for window in vae.encode_plan(num_frames):
        n, m = window.stop - window.start, window.out_stop - window.out_start
        spans += [(window.start + k * n // m, window.start + (k + 1) * n // m) for k in range(m)]
    return spans


@torch.no_grad()
def held_image_latents(vae, num_frames: int, width: int, height: int, start: torch.Tensor | None = None,
                       end: torch.Tensor | None = None,
                       progress: ProgressFn | None = None) -> InpaintCondition:
    """The 4-channel model's image-to-video condition: ``video_latents`` holding the start image(s)
    on the latents that decode to the first frames and the end image(s) on those that decode to
    the last frames, and ``generate_mask`` 0 there (1 elsewhere, where ``video_latents`` are 0).

    Each side's latents come from encoding, unit by unit, a still of that side: frame i shows
    start image min(i, k - 1) (end image max(0, i - first end frame)), so a held latent decodes to
    its image and not to a blend with the other side. A latent covering kept frames of both sides
    (clips of one or two latents) holds the start. Only the units holding kept latents are encoded."""
    start, end = kept_images(num_frames, width, height, start, end)
    n_start = 0 if start is None else start.shape[0]
    n_end = 0 if end is None else end.shape[0]
    spans = latent_frame_spans(vae, num_frames)
    first_end = num_frames - n_end
    start_held = [j for j, (a, _) in enumerate(spans) if a < n_start]
    end_held = [j for j, (_, b) in enumerate(spans) if b > first_end and j not in start_held]

    def start_still(i):
        return start[min(i, n_start - 1)]

    def end_still(i):
        return end[max(0, i - first_end)]

    scale = vae.scaling_factor
    h, w = height // vae.spatial_factor, width // vae.spatial_factor
    held = torch.zeros(1, vae.latent_channels, len(spans), h, w)
    generate = torch.ones(1, 1, len(spans), h, w)
    jobs = [(latents, still) for latents, still in ((start_held, start_still), (end_held, end_still)) if latents]
    units = [(window, latents, still) for latents, still in jobs for window in vae.encode_plan(num_frames)
             if any(window.out_start <= j < window.out_stop for j in latents)]
    for done, (window, latents, still) in enumerate(units, 1):
        pixels = torch.stack([still(i) for i in range(window.start, window.stop)], dim=1)[None]
        encoded = _encode(vae, pixels, scale)
        for j in latents:
            if window.out_start <= j < window.out_stop:
                held[:, :, j] = encoded[:, :, j - window.out_start]
                generate[:, :, j] = 0.0
        if progress is not None:
            progress(done, len(units))
    return InpaintCondition(video_latents=held, generate_mask=generate)
