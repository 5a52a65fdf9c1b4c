"""Slice seams: the options that hide them and the metric that measures them.

The slice VAE decodes each 2-latent slice's up blocks on their own, so the decoded video can
jump at every slice boundary (every 8 frames). Options for :meth:`VideoVAE.decode`:

- ``"none"``: the published decode.
- ``"smooth"``: the reference pipelines' ``smooth_output`` - re-encode the clip shifted by half
  a slice, decode again and average; halves the jump, costs a second encode *and* decode, blurs
  slightly (a second lossy round trip), and samples the posterior (seeded here).
- ``"blend"``: decode one extra window per boundary, made of the latents half a slice either side
  of it (same context rule as the regular slices), and cross-fade it in with a weight that is 1 at
  the boundary and falls linearly to 0 at the middle of the neighbouring slices, where the regular
  decode has no seam. No re-encode, deterministic, about one extra decode in cost.
"""

from __future__ import annotations

import torch

SEAM_OPTIONS = ("none", "blend", "smooth")


def blend_weights(frames, boundary, device, dtype):
    """(1, 1, frames, 1, 1) weights of a shifted window: 1 on the two frames around the slice
    boundary at offset ``boundary``, falling linearly towards both window edges."""
    t = torch.arange(frames, device=device, dtype=torch.float64)
    rising = (t + 1) / boundary
    falling = (frames - t) / (frames - boundary)
    w = torch.where(t < boundary, rising, falling).clamp(0, 1)
    return w.to(dtype).view(1, 1, frames, 1, 1)


def smooth_span(frames, mini_batch_encoder):
    """Frames [a, b) that smooth_output re-encodes (v3: 4..F-4), or None for clips of at most
    one encoder slice, which it leaves alone."""
    if frames <= mini_batch_encoder:
        return None
    return mini_batch_encoder // 2, frames - (mini_batch_encoder - mini_batch_encoder // 2)


def seam_ratio(video: torch.Tensor, boundaries) -> float:
    """Seam metric: mean absolute frame-to-frame difference across slice boundaries divided by
    the median frame-to-frame difference inside slices. About 1 for a clip that moves evenly;
    larger means visible jumps at the boundaries.

    ``video`` (B, C, F, H, W); ``boundaries`` are frame indices b where frames b-1 -> b cross a
    boundary.
    """
    diffs = (video[:, :, 1:] - video[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4)).double()  # diffs[i]: i -> i+1
    at = torch.tensor(sorted(boundaries)) - 1
    inside = torch.ones(diffs.shape[0], dtype=torch.bool)
    inside[at] = False
    return float(diffs[at].mean() / diffs[inside].median())

