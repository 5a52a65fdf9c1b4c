"""Conditions the pack's nodes attach to the LATENT dicts they create.

A 12-channel (InP) model always reads an image condition; when no frame is kept (text-to-video,
video-to-video) it is the encoded "everything generated" mask and masked video. The nodes that
make latents from a VAE attach an :class:`AllGenerated` under :data:`ALL_GENERATED_KEY`, and the
sampler uses it when its model needs one.
"""

import dataclasses

from ..easyanimate_core.sampling.inpaint import all_generated_condition
from . import host

ALL_GENERATED_KEY = "vdit_all_generated"


class AllGenerated:
    """The all-generated condition of a 12-channel model (see ``inpaint.all_generated_condition``)
    for latents of any shape, encoded by ``vae`` when first asked for and kept per shape: a
    4-channel model never pays for it, and latents resized between nodes still fit."""

    def __init__(self, vae):
        self.vae = vae
        self._encoded = {}

    def __call__(self, latent_shape):
        _, _, length, h, w = latent_shape
        if (length, h, w) not in self._encoded:
            scale = self.vae.spatial_factor
            host.load_models([self.vae])
            # no progress of its own: two distinct units at most (the rest reuse them), and the
            # sampler's bar is for its steps
            condition = all_generated_condition(self.vae, self.vae.decoded_frames(length), w * scale, h * scale)
            self._encoded[length, h, w] = moved(condition, host.intermediate_device())
        return self._encoded[length, h, w]


def moved(condition, device):
    """A copy of an InpaintCondition with its tensors on ``device`` (cond dicts live between nodes)."""
    return dataclasses.replace(condition, **{field.name: getattr(condition, field.name).to(device)
                                             for field in dataclasses.fields(condition)
                                             if getattr(condition, field.name) is not None})
