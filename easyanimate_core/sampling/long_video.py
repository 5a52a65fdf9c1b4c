"""Chunked long-video mode (the reference's ``partial_video_length`` loop).

A clip longer than one pass is generated as consecutive chunks of ``chunk_frames`` frames. Every
chunk after the first is an image-to-video generation whose start images are the last
``overlap_frames`` frames of the previous chunk, and the overlap is cross-faded linearly (weight
of the new chunk ``i / overlap`` on the i-th shared frame, as the reference). Frames are yielded
as soon as no later chunk can change them, so a caller that streams them to a file holds at most
one chunk in memory: memory does not grow with the clip.

The alternative for long clips is sampling the whole latent clip with sliding context windows
(``SamplingOptions(context=ContextWindows(...))``): one consistent sampling run, no drift
between chunks, but the whole latent clip lives in memory (small: 1/48 of the pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from ..errors import InputError
from ..progress import ProgressFn
from . import shape_rules
from .options import SamplingOptions
from .pipeline import Components, encode_prompts, generate_encoded

log = logging.getLogger("easyanimate_core")


def plan_chunks(frames: int, chunk_frames: int, overlap_frames: int, vae) -> list:
    """(start, length) of each chunk; every length is a frame count the VAE decodes exactly.

    The final chunk is shortened to what is left (floored to a valid count), as the reference
    does; when that cannot add a frame beyond the overlap the clip ends one chunk earlier and the
    shorter total is logged."""
    chunk = shape_rules.adjust_frames(chunk_frames, vae)
    if not 0 <= 2 * overlap_frames <= chunk:
        raise InputError(f"the overlap ({overlap_frames} frames) must be at most half a chunk ({chunk} "
                         f"frames); lower the overlap or raise the chunk length")
    chunks = [(0, chunk if frames >= chunk else shape_rules.adjust_frames(frames, vae))]
    end = chunks[0][1]
    while end < frames:
        start = end - overlap_frames
        want = min(chunk, frames - start)
        length = want
        while length > overlap_frames and not shape_rules.valid_frames(length, vae):
            length -= 1
        if length <= overlap_frames:
            break
        chunks.append((start, length))
        end = start + length
    if end != frames:
        log.warning("long video: %d frames asked for, %d generated (chunks of %d frames overlapping by "
                    "%d, each a frame count the VAE decodes exactly)", frames, end, chunk, overlap_frames)
    return chunks


def iter_long_video(components: Components, prompt, negative_prompt="", options: SamplingOptions | None = None,
                    *, frames: int, chunk_frames: int = 72, overlap_frames: int = 4,
                    start_image: torch.Tensor | None = None, progress: ProgressFn | None = None,
                    **video) -> Iterator[torch.Tensor]:
    """Yield the clip as consecutive finished pieces (1, 3, n, H, W) in [0, 1].

    ``start_image`` conditions the first chunk; ``video`` holds the other keywords of
    ``pipeline.generate_encoded`` (width, height, seam). One generator, seeded once with
    ``options.seed``, feeds all chunks, so a seed gives one clip."""
    options = options or SamplingOptions()
    if "video" in video or "end_image" in video:
        raise InputError("long-video mode conditions each chunk on the previous one; it takes a start "
                         "image but no end image or input video")
    cond, uncond = encode_prompts(components, prompt, negative_prompt)
    generator = torch.Generator("cpu").manual_seed(options.seed)
    chunks = plan_chunks(frames, chunk_frames, overlap_frames, components.vae)
    tail = None  # the previous chunk's last `overlap_frames` frames, not yet final
    images = start_image
    for index, (_, length) in enumerate(chunks):
        log.info("long video: chunk %d of %d (%d frames)", index + 1, len(chunks), length)
        piece = generate_encoded(components, cond, uncond, options, frames=length, generator=generator,
                                 start_image=images, progress=progress, **video)
        last = index == len(chunks) - 1
        next_tail = None if last or not overlap_frames else piece[:, :, length - overlap_frames:]
        if tail is not None:
            mix = torch.arange(overlap_frames, dtype=piece.dtype).div(overlap_frames).view(1, 1, -1, 1, 1)
            yield tail * (1 - mix) + piece[:, :, :overlap_frames] * mix
            piece = piece[:, :, overlap_frames:]
        yield piece if next_tail is None else piece[:, :, :piece.shape[2] - overlap_frames]
        tail = next_tail
        images = None if tail is None else tail[0].transpose(0, 1)  # (k, 3, H, W): next chunk's start


def generate_long(components: Components, prompt, negative_prompt="", options: SamplingOptions | None = None,
                  **video) -> torch.Tensor:
    """The whole clip of :func:`iter_long_video` as one (1, 3, F, H, W) tensor in [0, 1]."""
    return torch.cat(list(iter_long_video(components, prompt, negative_prompt, options, **video)), dim=2)
