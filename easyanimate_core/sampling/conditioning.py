"""What a DiT call reads besides the noisy latents, one small object per kind of conditioning.

- :class:`Guidance`: the text, and classifier-free guidance: the batch ``[uncond, cond]`` in,
  the guided eps out (one DiT call per window and step);
- an image condition, by the model's kind:
  :class:`NoImage` (4-channel text-to-video), :class:`InpaintChannels` (12-channel InP models: the
  extra input channels and the CLIP image tokens, switched on for the last share of the steps),
  :class:`LatentBlend` (4-channel image-to-video: held latents re-imposed after every step).

Each image condition answers ``dit_inputs(window, step)`` (extra DiT keyword arguments for the
latent frames ``window`` at step ``step``), ``phase(step)`` (which of its input sets the DiT sees
at ``step``: a step cache keeps one state per phase) and ``after_step(step, x)`` (the state to go
on from), so the sampling loop stays the same for every mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..models.transformer import CLIP_CHANNELS, CLIP_TOKENS
from . import guidance as guidance_rules
from .context import Window, take_frames
from .inpaint import InpaintCondition


@dataclass
class TextCondition:
    """T5 states padded to 120 tokens (``text_encoder.MAX_LENGTH``) and the key mask (True = real
    token)."""

    embeds: torch.Tensor  # (B, 120, C)
    mask: torch.Tensor    # (B, 120) bool


def as_text_condition(cond, batch: int | None = None) -> TextCondition:
    """Normalise text conditioning to :class:`TextCondition`.

    Accepts a :class:`TextCondition`, an ``(embeds, mask)`` pair, or bare embeddings (B, N, C)
    with every token real - what ComfyUI's native T5 encode yields (no padding, no mask). Padding
    is added up to 120 tokens as zero vectors with mask False, and masked positions are zeroed,
    so both routes hand the DiT identical tensors; longer inputs are cut to 120 (with a warning)."""
    from ..models.text_encoder import normalize_text_embeddings

    if isinstance(cond, TextCondition):
        embeds, mask = cond.embeds, cond.mask
    elif isinstance(cond, (tuple, list)):
        embeds, mask = cond
    else:
        embeds, mask = cond, None
    embeds, mask = normalize_text_embeddings(embeds, mask)
    mask = mask.bool()
    embeds = embeds * mask[..., None].to(embeds.dtype)  # pad positions: the same zeros on both routes
    if batch is not None and embeds.shape[0] != batch:
        if embeds.shape[0] != 1:
            raise InputError(f"text conditioning has batch {embeds.shape[0]} but the latents have batch "
                             f"{batch}; encode one prompt or one per video")
        embeds, mask = embeds.expand(batch, -1, -1), mask.expand(batch, -1)
    return TextCondition(embeds, mask)


class Guidance:
    """Text conditioning and classifier-free guidance of one run. Under guidance every DiT input
    is doubled to ``[uncond, cond]`` (the reference's order) and the halves are combined; the
    learned-sigma half of the output is dropped either way."""

    def __init__(self, cond, uncond, batch: int, scale: float, rescale: float, latent_channels: int,
                 device, dtype):
        self.active = guidance_rules.uses_guidance(scale)
        self.scale, self.rescale, self.latent_channels = scale, rescale, latent_channels
        text = as_text_condition(cond, batch)
        if self.active:
            negative = as_text_condition(uncond, batch) if uncond is not None else TextCondition(
                torch.zeros_like(text.embeds), torch.zeros_like(text.mask))
            text = TextCondition(torch.cat([negative.embeds, text.embeds]), torch.cat([negative.mask, text.mask]))
        self.embeds, self.mask = text.embeds.to(device, dtype), text.mask.to(device)

    def batch(self, tensor: torch.Tensor) -> torch.Tensor:
        """A per-video input as the DiT batch: twice under guidance (same tensor both halves)."""
        return torch.cat([tensor, tensor]) if self.active else tensor

    def text_inputs(self) -> dict:
        return {"encoder_hidden_states": self.embeds, "encoder_attention_mask": self.mask}

    def eps(self, out: torch.Tensor) -> torch.Tensor:
        """The guided eps from the DiT output of the batch."""
        out = guidance_rules.eps_only(out.float(), self.latent_channels)
        if not self.active:
            return out
        uncond, cond = out.chunk(2)
        return guidance_rules.guide(uncond, cond, self.scale, self.rescale)


class NoImage:
    """4-channel text-to-video (and video-to-video): nothing besides the text."""

    def dit_inputs(self, window: Window, step: int) -> dict:
        return {}

    def phase(self, step: int) -> bool:
        return False

    def after_step(self, step: int, x: torch.Tensor) -> torch.Tensor:
        return x


class InpaintChannels:
    """12-channel (InP) models: ``[encoded mask, encoded kept frames]`` as 8 extra input channels
    every step, and the CLIP image tokens in the conditional branch from step ``clip_from_step``
    on (zeros with mask 0 before, in the negative branch, or without an image)."""

    def __init__(self, inpaint: InpaintCondition, clip_embeds, batch: int, guided: bool,
                 clip_from_step: float, device, dtype):
        self.latents = inpaint.inpaint_latents().to(device, dtype).expand(batch, -1, -1, -1, -1)
        self.guided, self.clip_from_step = guided, clip_from_step
        self.has_image = clip_embeds is not None
        self.clip = {active: self._clip_inputs(clip_embeds, batch, active, device, dtype)
                     for active in (False, True)}
        self.per_window = {}  # window -> its DiT-batch channels: built once, not every step

    def _clip_inputs(self, clip_embeds, batch, active, device, dtype):
        width = CLIP_CHANNELS if clip_embeds is None else clip_embeds.shape[-1]
        zeros = torch.zeros(batch, width, device=device, dtype=dtype)
        off = torch.zeros(batch, CLIP_TOKENS, device=device, dtype=torch.bool)
        if clip_embeds is None or not active:
            states, mask = zeros, off
        else:
            states = clip_embeds.to(device, dtype).expand(batch, -1)
            mask = torch.ones(batch, CLIP_TOKENS, device=device, dtype=torch.bool)
        if self.guided:  # the negative branch never sees the image
            return torch.cat([zeros, states]), torch.cat([off, mask])
        return states, mask

    def dit_inputs(self, window: Window, step: int) -> dict:
        if window not in self.per_window:
            extra = take_frames(self.latents, window)
            self.per_window[window] = torch.cat([extra, extra]) if self.guided else extra
        states, mask = self.clip[self.phase(step)]
        return {"inpaint_latents": self.per_window[window], "clip_encoder_hidden_states": states,
                "clip_attention_mask": mask}

    def phase(self, step: int) -> bool:
        """Whether the CLIP image tokens are on (without an image both phases read zeros)."""
        return self.has_image and step >= self.clip_from_step

    def after_step(self, step: int, x: torch.Tensor) -> torch.Tensor:
        return x


class LatentBlend:
    """4-channel image-to-video: after every step the held latents (start / end frames) replace
    the state where ``generate_mask`` is 0, noised to the level the state is at (the reference's
    conditioning of 4-channel models); at the last step that is the held latents themselves."""

    def __init__(self, inpaint: InpaintCondition, plan, noise: torch.Tensor, device):
        self.held = inpaint.video_latents.to(device).float()
        self.generate = inpaint.generate_mask.to(device).float()
        self.plan, self.noise = plan, noise

    def dit_inputs(self, window: Window, step: int) -> dict:
        return {}

    def phase(self, step: int) -> bool:
        return False

    def after_step(self, step: int, x: torch.Tensor) -> torch.Tensor:
        level = self.plan.start + step + 1
        return (1 - self.generate) * self.plan.noised(self.held, self.noise, level) + self.generate * x
