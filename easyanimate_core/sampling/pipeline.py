"""The video pipeline: text-to-video, text-to-image, image-to-video and video-to-video.

Plain functions over explicit components, in three layers a host can enter at any point:

- :func:`denoise` - the sampling loop alone, from latents and pre-encoded conditioning (what the
  ComfyUI sampler node calls with ComfyUI's text embeddings and an empty or encoded LATENT);
- :func:`encode_prompts` (T5), :func:`image_condition` (CLIP), :func:`encode_condition` (start /
  end images or an input video through the VAE), :func:`decode` - the encoders around it;
- :func:`generate` - everything: prompt -> video.

Conventions (see also ``frames.py`` for the size / frame rules):

- latents passed to and returned by :func:`denoise` are VAE latents; ``scaling_factor``
  (``vae.scaling_factor``) moves them into the DiT's space and back. Pass 1.0 for latents that
  are already scaled;
- :func:`generate` and :func:`decode` return video (B, 3, F, H, W) float32 in **[0, 1]** on the
  CPU (the reference's output convention; the core's [-1, 1] tensors stay internal);
- input images / videos for :func:`generate` are float tensors in [0, 1] with channels first:
  images (3, H, W) or (k, 3, H, W), a video (3, F, H, W); they are scaled to cover the output size
  and centre-cropped;
- sampler arithmetic runs in float32; each model runs in its own weights' dtype (bf16 / fp16 /
  fp32 as loaded);
- with ``Components.offload`` each model sits on ``offload_device`` (CPU) and visits the compute
  device only while it runs (text encoder, then CLIP, then VAE encode, DiT, VAE decode) - what a
  12-16 GB card needs.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..models.transformer import CLIP_CHANNELS, CLIP_TOKENS
from ..progress import ProgressFn
from . import frames as frame_rules
from .context import ContextWindows, fuse_windows
from .inpaint import (
    InpaintCondition,
    all_generated_condition,
    encode_source,
    image_to_video_source,
    video_source,
)
from .step_cache import StepCache

log = logging.getLogger("easyanimate_core")

CLIP_APPLY_RATIO = 0.5  # CLIP image tokens act in the last half of the steps (reference default)


@dataclass
class TextCondition:
    """T5 states padded to 120 tokens (``text_encoder.MAX_LENGTH``) and the key mask (True = real
    token)."""

    embeds: torch.Tensor  # (B, 120, C)
    mask: torch.Tensor    # (B, 120) bool


@dataclass
class Components:
    """The models a generation uses. ``text_encoder`` and ``clip`` are optional (a host may
    encode prompts itself; ``clip`` only matters for image-to-video with 12-channel models)."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: object = None
    clip: object = None
    device: str | torch.device = "cpu"
    offload: bool = False
    offload_device: str | torch.device = "cpu"

    @contextlib.contextmanager
    def using(self, model):
        """Run a block with ``model`` on the compute device; with ``offload`` it goes back to
        ``offload_device`` afterwards, so only one big model occupies the device at a time."""
        model.to(self.device)
        try:
            yield model
        finally:
            if self.offload:
                model.to(self.offload_device)
                if torch.device(self.device).type == "cuda":
                    torch.cuda.empty_cache()


def load_components(transformer, vae, text_encoder=None, *, tokenizer=None, clip=None,
                    motion_module=None, transformer_config=None, vae_config=None,
                    dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                    offload: bool = False) -> Components:
    """Load the models of a generation from paths, as the loaders accept them (release folders,
    their ``transformer/`` / ``vae/`` / ``text_encoder/`` / ``image_encoder/`` subfolders, single
    weight files). With ``offload`` they load onto the CPU and visit ``device`` one at a time.
    ``transformer_config`` / ``vae_config``: presets ("v1" / "v2" / "v3") or config dicts for
    loose weight files. fp16 VAEs compute in float32 (the slice VAE overflows in fp16)."""
    from ..models.clip_vision import ClipImageEncoder
    from ..models.text_encoder import TextEncoder
    from ..models.transformer import load_transformer
    from ..models.vae import load_vae

    home = torch.device("cpu") if offload else torch.device(device)
    dit = load_transformer(transformer, motion_module=motion_module, config=transformer_config, dtype=dtype,
                           device=home)
    video_vae = load_vae(vae, dtype=dtype, device=home, preset=vae_config, upcast=dtype == torch.float16)
    text = None if text_encoder is None else TextEncoder.load(
        text_encoder, tokenizer_path=tokenizer, dtype=dtype, device=home)
    image = None if clip is None else ClipImageEncoder.load(str(clip), dtype=dtype, device=home)
    return Components(dit, video_vae, text, image, device=device, offload=offload)


# --------------------------------------------------------------------------- conditioning

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


def encode_prompts(components: Components, prompt, negative_prompt="") -> tuple:
    """(cond, uncond) :class:`TextCondition` pair from the T5 text encoder."""
    if components.text_encoder is None:
        raise InputError("no text encoder was given; load a T5 text encoder or pass pre-encoded "
                         "conditioning to denoise()")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    with components.using(components.text_encoder) as encoder:
        embeds, mask = encoder.encode(negatives + prompts)
    n = len(prompts)
    uncond = as_text_condition((embeds[:n].cpu(), mask[:n].cpu()))
    cond = as_text_condition((embeds[n:].cpu(), mask[n:].cpu()))
    return cond, uncond


def image_condition(components: Components, images: torch.Tensor | None) -> torch.Tensor | None:
    """CLIP ``image_embeds`` (B, 768) of (B, 3, H, W) images in [0, 1], or None without images."""
    if images is None:
        return None
    if components.clip is None:
        raise InputError("image-to-video with a 12-channel (InP) model needs a CLIP image encoder; "
                         "load the image_encoder/ folder of the release")
    with components.using(components.clip) as clip:
        return clip.encode(images.float()).cpu()


def _clip_inputs(clip_embeds, batch, use_cfg, active, device, dtype):
    """(hidden states, mask) for the DiT's CLIP tokens: the image in the conditional branch while
    ``active``; zeros with mask 0 otherwise (negative branch, no image, or before the apply ratio)."""
    width = CLIP_CHANNELS if clip_embeds is None else clip_embeds.shape[-1]
    zeros = torch.zeros(batch, width, device=device, dtype=dtype)
    off = torch.zeros(batch, CLIP_TOKENS, device=device, dtype=torch.bool)
    if clip_embeds is None or not active:
        states, mask = zeros, off
    else:
        states = clip_embeds.to(device, dtype).expand(batch, -1)
        mask = torch.ones(batch, CLIP_TOKENS, device=device, dtype=torch.bool)
    if use_cfg:  # the negative branch never sees the image
        return torch.cat([zeros, states]), torch.cat([off, mask])
    return states, mask


# --------------------------------------------------------------------------- denoising

def model_channels(transformer) -> int:
    return int(transformer.config["in_channels"])


def denoise(transformer, latents: torch.Tensor, cond, uncond=None, *, steps: int = 25,
            cfg: float = 7.0, sampler: str = "dpmpp_2m", karras: bool = False,
            seed: int | None = None, generator: torch.Generator | None = None,
            denoise_strength: float = 1.0, noise: torch.Tensor | None = None,
            scaling_factor: float = 1.0, inpaint: InpaintCondition | None = None,
            clip_embeds: torch.Tensor | None = None, clip_apply_ratio: float = CLIP_APPLY_RATIO,
            context: ContextWindows | None = None, guidance_rescale: float = 0.0,
            progress: ProgressFn | None = None, step_cache: StepCache | None = None) -> torch.Tensor:
    """Sample latents with ``transformer``; returns VAE latents shaped like ``latents`` (float32).

    latents: (B, 4, L, h, w) VAE latents. With ``denoise_strength`` 1 only their shape matters
        (pure noise start, as the reference); below 1 they are the video being re-imagined
        (video-to-video: the last ``int(steps * strength)`` steps run from them noised).
    cond / uncond: text conditioning (see :func:`as_text_condition`); ``uncond`` defaults to an
        all-padding negative. Classifier-free guidance (batch [uncond, cond]) runs when cfg > 1.
    sampler / karras / steps: see ``schedule.SAMPLERS``. The noise comes from ``noise``, else
        from ``generator``, else from a CPU generator seeded with ``seed`` (0 when None), drawn on
        the CPU so a seed gives the same video on every device; the same generator feeds
        ``euler_a``'s per-step noise.
    inpaint: :class:`InpaintCondition` (image-to-video / start+end frames): read by 12-channel
        models as extra input channels; 4-channel models are blended towards the kept region
        after every step. 12-channel models without one read zeros (the reference pipeline's
        "no mask" input); pass :func:`~.inpaint.all_generated_condition` instead to give them
        what :func:`generate` gives (the reference's text-to-video with an InP model).
    clip_embeds: (1 or B, 768) CLIP image embeddings for 12-channel models, used in the
        conditional branch for the last ``clip_apply_ratio`` share of the steps only.
    context: :class:`~.context.ContextWindows` to run the DiT on overlapping windows of latent
        frames (long videos with bounded memory); None runs all frames at once.
    progress: ``progress(step, steps, preview=x0)`` after every step, ``x0`` the current clean
        estimate (scaled latents, for a cheap preview); raise from it to cancel.
    step_cache: a :class:`~.step_cache.StepCache` to skip most of the DiT on steps where its input
        barely changed (off when None); it keeps one cache per context window and counts skips.
    """
    from .guidance import cfg_model, drop_learned_sigma, uses_guidance
    from .samplers import sample
    from .schedule import make_plan

    if latents.ndim != 5:
        raise InputError(f"latents must be 5-D (batch, channels, frames, height, width), got shape "
                         f"{tuple(latents.shape)}; use a video latent")
    channels = model_channels(transformer)
    latent_channels = latents.shape[1]
    if channels not in (latent_channels, 3 * latent_channels):
        raise InputError(f"the DiT takes {channels} input channels but the latents have {latent_channels}; "
                         f"use a {latent_channels}-channel (text-to-video) or "
                         f"{3 * latent_channels}-channel (InP) model")
    is_inp = channels == 3 * latent_channels
    if latents.shape[-1] % 2 or latents.shape[-2] % 2:
        raise InputError(f"latent height and width must be even (pixel sizes multiples of 16), got "
                         f"{latents.shape[-2]}x{latents.shape[-1]}; adjust the video size")
    device, dtype = transformer.device, transformer.dtype
    batch, _, length = latents.shape[:3]
    use_cfg = uses_guidance(cfg)

    text = as_text_condition(cond, batch)
    if use_cfg:
        negative = as_text_condition(uncond, batch) if uncond is not None else TextCondition(
            torch.zeros_like(text.embeds), torch.zeros_like(text.mask))
        text = TextCondition(torch.cat([negative.embeds, text.embeds]), torch.cat([negative.mask, text.mask]))
    text_embeds, text_mask = text.embeds.to(device, dtype), text.mask.to(device)

    if inpaint is not None:
        if is_inp and inpaint.mask_latents is None:
            raise InputError("the image condition has no mask latents but the DiT is a 12-channel InP model; "
                             "encode it with encode_condition(..., inp=True) or inp=None")
        if not is_inp and inpaint.latent_mask is None:
            raise InputError("the image condition has no video latents but the DiT is a 4-channel model, "
                             "which is conditioned by latent blending; encode it with "
                             "encode_condition(..., inp=False) or inp=None")
    extra = None
    if is_inp:
        if inpaint is None:  # the reference's "no mask" input: everything generated, nothing shown
            zeros = torch.zeros_like(latents, dtype=torch.float32)
            inpaint_for_dit = InpaintCondition(mask_latents=zeros, masked_latents=zeros)
        else:
            inpaint_for_dit = inpaint
        extra = inpaint_for_dit.inpaint_latents().to(device, dtype)
        if extra.shape[2:] != latents.shape[2:]:
            raise InputError(f"the image condition covers {extra.shape[2]} latent frames of "
                             f"{extra.shape[-2]}x{extra.shape[-1]} but the latents have {length} of "
                             f"{latents.shape[-2]}x{latents.shape[-1]}; build both for the same size and length")
        extra = extra.expand(batch, -1, -1, -1, -1)
    clip_embeds = clip_embeds if is_inp else None

    if generator is None:  # also feeds euler_a's per-step noise when `noise` is given
        generator = torch.Generator("cpu").manual_seed(0 if seed is None else int(seed))
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32,
                            device=generator.device)
    noise = noise.float().to(device)
    plan = make_plan(sampler, steps, karras=karras, denoise=denoise_strength)
    state = {"step": 0}  # the sampler's step index, advanced by the step callback
    if step_cache is not None:
        step_cache.begin(plan.steps)
    reps = 2 if use_cfg else 1  # the DiT batch is [uncond, cond] under guidance
    # Everything that does not change between steps is built once, so a step costs the DiT call
    # plus a handful of tensor ops (see bench/bench_pipeline.py).
    clip_inputs = {active: _clip_inputs(clip_embeds, batch, use_cfg, active, device, dtype)
                   for active in (False, True)} if is_inp else None

    def window_model(window: range, clip_active: bool):
        """The guided eps model over latent frames ``window``."""
        extra_in = None if extra is None else torch.cat([extra[:, :, window.start:window.stop]] * reps)
        states, clip_mask = clip_inputs[clip_active] if is_inp else (None, None)

        def dit(x, t):
            cached = {} if step_cache is None else {  # one cache per window and conditioning
                "step_cache": step_cache.at(state["step"], (window.start, window.stop, clip_active))}
            return transformer(hidden_states=x, timestep=t, encoder_hidden_states=text_embeds,
                               encoder_attention_mask=text_mask, inpaint_latents=extra_in,
                               clip_encoder_hidden_states=states, clip_attention_mask=clip_mask, **cached).float()

        eps = drop_learned_sigma(dit, latent_channels)
        return cfg_model(eps, cfg, guidance_rescale) if use_cfg else eps

    models = {}

    def model_for(window: range, clip_active: bool):
        key = (window.start, window.stop, clip_active)
        if key not in models:
            models[key] = window_model(window, clip_active)
        return models[key]

    windows = None if context is None else [(w, weight.to(device)) for w, weight in context.plan(length)]

    def model_fn(x, t):
        # without a CLIP image both settings give the DiT the same input (and one step cache)
        clip_active = clip_embeds is not None and state["step"] >= plan.steps * (1 - clip_apply_ratio)
        if windows is None:
            return model_for(range(length), clip_active)(x, t)
        return fuse_windows(lambda w: model_for(w, clip_active)(x[:, :, w.start:w.stop], t), windows, x)

    keep = None
    if inpaint is not None and not is_inp:
        keep = inpaint.video_latents.to(device).float()
        generate_mask = inpaint.latent_mask.to(device).float()

    def after_step(i, x, denoised):
        state["step"] = i + 1
        if keep is None:
            return None
        # 4-channel conditioning (reference): the kept region is the input noised to the next level
        return (1 - generate_mask) * plan.noised(keep, noise, plan.start + i + 1) + generate_mask * x

    init = latents.float().to(device) * scaling_factor if denoise_strength < 1.0 else None
    with torch.no_grad():
        out = sample(model_fn, noise, sampler=sampler, steps=steps, karras=karras, generator=generator,
                     denoise=denoise_strength, init_latents=init, progress=progress, callback=after_step)
    return (out / scaling_factor).float().cpu()


# --------------------------------------------------------------------------- decoding

@torch.no_grad()
def decode(components: Components, latents: torch.Tensor, seam: str | None = None,
           progress: ProgressFn | None = None) -> torch.Tensor:
    """VAE latents -> video (B, 3, F, H, W) float32 in [0, 1] on the CPU, slice by slice.
    ``seam`` picks the VAE's slice-seam treatment (its default when None)."""
    with components.using(components.vae) as vae:
        dtype = next(vae.parameters()).dtype
        kwargs = {} if seam is None else {"seam": seam}
        video = vae.decode(latents.to(components.device, dtype), progress=progress, **kwargs)
    # in place: the decoded clip is the largest tensor of a long run; no extra copies of it
    return video.float().cpu().clamp_(-1, 1).add_(1).div_(2)


# --------------------------------------------------------------------------- everything

def encode_condition(vae, frames: int, width: int, height: int, *, start_image=None, end_image=None,
                     video=None, inp: bool | None = None,
                     progress: ProgressFn | None = None) -> InpaintCondition | None:
    """The :class:`InpaintCondition` for start / end images (image-to-video) or an input video
    (video-to-video), encoded by ``vae`` where it sits; None when nothing is to be encoded.

    ``inp``: True for a 12-channel (InP) DiT (mask + masked-video latents), False for a 4-channel
    one (input latents + latent mask for blending), None when the DiT is not known yet (a graph
    node that only has the VAE): both are built and :func:`denoise` takes what its model reads.
    A 12-channel model without images still needs its all-generated condition (``inp=True``)."""
    if video is not None:
        if start_image is not None or end_image is not None:
            raise InputError("video-to-video takes no start or end image; pass either a video or images")
        if video.shape[-3] < frames:
            raise InputError(f"the input video has {video.shape[-3]} frames but {frames} were asked for; "
                             f"ask for at most {video.shape[-3]} frames")
        source, want_video = video_source(video, width, height), True
    elif start_image is not None or end_image is not None:
        source = image_to_video_source(frames, width, height, start_image, end_image)
        want_video = inp is not True
    elif inp:
        return all_generated_condition(vae, frames, width, height, progress=progress)
    else:
        return None
    return encode_source(vae, source, frames, vae.scaling_factor, want_mask=inp is not False,
                         want_video=want_video, progress=progress)


def generate(components: Components, prompt, negative_prompt="", **options) -> torch.Tensor:
    """Prompt (+ optional start / end images or an input video) -> video (B, 3, F, H, W) in [0, 1].

    Encodes the prompts with ``components.text_encoder``, then :func:`generate_encoded`."""
    cond, uncond = encode_prompts(components, prompt, negative_prompt)
    return generate_encoded(components, cond, uncond, **options)


def generate_encoded(components: Components, cond, uncond=None, *, width: int = 672,
                     height: int = 384, frames: int = 144, steps: int = 25, cfg: float = 7.0,
                     sampler: str = "dpmpp_2m", karras: bool = False, seed: int = 43,
                     generator: torch.Generator | None = None,
                     start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                     video: torch.Tensor | None = None, strength: float = 1.0,
                     clip_apply_ratio: float = CLIP_APPLY_RATIO, context: ContextWindows | None = None,
                     guidance_rescale: float = 0.0, seam: str | None = None,
                     progress: ProgressFn | None = None, step_cache: StepCache | None = None) -> torch.Tensor:
    """:func:`generate` from encoded text conditioning (see :func:`as_text_condition`).

    ``frames`` = 1 makes an image. Sizes are floored to multiples of 16 and frame counts to what
    the VAE decodes exactly (each change logged). ``strength`` < 1 with ``video`` is
    video-to-video. ``generator`` (CPU) overrides ``seed`` (the long-video loop shares one across
    chunks). Defaults are the v3 release's (DPM++ 25 steps, CFG 7, 672x384, 144 frames, seed 43)."""
    vae = components.vae
    width, height = frame_rules.adjust_size(width, height)
    frames = frame_rules.adjust_frames(frames, vae)
    if video is None and strength < 1.0:
        raise InputError(f"strength {strength} < 1 needs an input video (video-to-video); pass a video "
                         f"or use strength 1.0")
    cond = as_text_condition(cond)
    batch = cond.embeds.shape[0]
    is_inp = model_channels(components.transformer) != int(vae.config.get("latent_channels", 4))
    clip_embeds = None
    if is_inp and start_image is not None:
        first = start_image if start_image.ndim == 3 else start_image[0]
        clip_embeds = image_condition(components, first[None])
    with components.using(vae):
        inpaint = encode_condition(vae, frames, width, height, start_image=start_image, end_image=end_image,
                                   video=video, inp=is_inp, progress=progress)
    shape = frame_rules.latent_shape(vae, frames, width, height, batch)
    if video is not None:
        latents = inpaint.video_latents.expand(shape) / vae.scaling_factor
        if is_inp:  # the 12-channel model reads mask / masked latents only
            inpaint.video_latents = inpaint.latent_mask = None
        else:  # nothing is kept: the strength alone decides what survives
            inpaint = None
    else:
        latents = torch.zeros(shape)
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    with components.using(components.transformer) as transformer:
        latents = denoise(transformer, latents, cond, uncond, steps=steps, cfg=cfg, sampler=sampler,
                          karras=karras, generator=generator, denoise_strength=strength,
                          scaling_factor=vae.scaling_factor, inpaint=inpaint, clip_embeds=clip_embeds,
                          clip_apply_ratio=clip_apply_ratio, context=context,
                          guidance_rescale=guidance_rescale, progress=progress, step_cache=step_cache)
    return decode(components, latents, seam=seam, progress=progress)
