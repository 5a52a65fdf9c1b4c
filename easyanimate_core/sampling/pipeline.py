"""The video pipeline: text-to-video, text-to-image, image-to-video and video-to-video.

Plain functions over explicit components, in three layers a host can enter at any point:

- :func:`denoise` - the sampling loop alone, from latents and pre-encoded conditioning (what the
  ComfyUI sampler node calls with ComfyUI's text embeddings and an empty or encoded LATENT);
- :func:`encode_prompts` (T5), :func:`image_condition` (CLIP), :func:`encode_condition` (start /
  end images or an input video through the VAE), :func:`decode` - the encoders around it;
- :func:`generate` - everything: prompt -> video.

Conventions (see also ``shape_rules.py`` for the size / frame rules):

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
import dataclasses
from dataclasses import dataclass

import torch

from ..errors import EasyAnimateError, InputError
from ..progress import ProgressFn
from . import shape_rules
from .conditioning import (
    Guidance,
    InpaintChannels,
    LatentBlend,
    NoImage,
    TextCondition,
    as_text_condition,
)
from .context import fuse_windows, take_frames
from .inpaint import (
    InpaintCondition,
    all_generated_condition,
    encode_source,
    held_image_latents,
    image_to_video_source,
    video_source,
)
from .interrupt import interrupt_between_blocks, with_interrupt
from .options import SamplingOptions


__all__ = ["Components", "SamplingOptions", "TextCondition", "as_text_condition", "decode", "denoise",
           "encode_condition", "encode_prompts", "generate", "generate_encoded", "image_condition",
           "load_components", "model_channels"]


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


# --------------------------------------------------------------------------- denoising

def model_channels(transformer) -> int:
    return int(transformer.config["in_channels"])


def _check_latents(transformer, latents: torch.Tensor) -> bool:
    """Raise for latents the DiT cannot take; True for a 12-channel (InP) DiT."""
    if latents.ndim != 5:
        raise InputError(f"latents must be 5-D (batch, channels, frames, height, width), got shape "
                         f"{tuple(latents.shape)}; use a video latent")
    channels, latent_channels = model_channels(transformer), latents.shape[1]
    if channels not in (latent_channels, 3 * latent_channels):
        raise InputError(f"the DiT takes {channels} input channels but the latents have {latent_channels}; "
                         f"use a {latent_channels}-channel (text-to-video) or "
                         f"{3 * latent_channels}-channel (InP) model")
    if latents.shape[-1] % 2 or latents.shape[-2] % 2:
        raise InputError(f"latent height and width must be even (the DiT's 2x2 patches), got "
                         f"{latents.shape[-2]}x{latents.shape[-1]}; adjust the video size")
    return channels == 3 * latent_channels


def _image_condition(is_inp: bool, latents, inpaint: InpaintCondition | None, clip_embeds, guided: bool,
                     plan, noise, options: SamplingOptions, device, dtype):
    """The conditioning object of the model's kind (see ``conditioning.py``)."""
    if inpaint is None:
        if not is_inp:
            return NoImage()
        zeros = torch.zeros_like(latents, dtype=torch.float32)  # the reference's "no mask" input
        inpaint = InpaintCondition(encoded_mask=zeros, encoded_kept_frames=zeros)
    if is_inp and inpaint.encoded_mask is None:
        raise InputError("the image condition has no encoded mask but the DiT is a 12-channel InP model; "
                         "encode it with encode_condition(..., inp=True) or inp=None")
    if not is_inp and inpaint.generate_mask is None:
        raise InputError("the image condition has no held latents but the DiT is a 4-channel model, "
                         "which is conditioned by latent blending; encode it with "
                         "encode_condition(..., inp=False) or inp=None")
    covered = inpaint.encoded_mask if is_inp else inpaint.video_latents
    if covered.shape[2:] != latents.shape[2:]:
        raise InputError(f"the image condition covers {covered.shape[2]} latent frames of "
                         f"{covered.shape[-2]}x{covered.shape[-1]} but the latents have {latents.shape[2]} of "
                         f"{latents.shape[-2]}x{latents.shape[-1]}; build both for the same size and length")
    if not is_inp:
        return LatentBlend(inpaint, plan, noise, device)
    clip_from_step = plan.steps * (1 - options.clip_apply_ratio)
    return InpaintChannels(inpaint, clip_embeds, latents.shape[0], guided, clip_from_step, device, dtype)


def _stop_if_not_finite(step: int, steps: int, x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise EasyAnimateError(f"sampling stopped at step {step} of {steps}: the latents are no longer finite "
                               f"(NaN or inf); suspect fp16 overflow (use bf16 or fp32), a bad LoRA (lower its "
                               f"strength or remove it) or NaN weights in the model")


def denoise(transformer, latents: torch.Tensor, cond, uncond=None, options: SamplingOptions | None = None, *,
            noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
            scaling_factor: float = 1.0, inpaint: InpaintCondition | None = None,
            clip_embeds: torch.Tensor | None = None, progress: ProgressFn | None = None) -> torch.Tensor:
    """Sample latents with ``transformer``; returns VAE latents shaped like ``latents`` (float32).

    latents: (B, 4, L, h, w) VAE latents. With ``options.strength`` 1 only their shape matters
        (pure noise start, as the reference); below 1 they are the video being re-imagined
        (video-to-video: the last ``int(steps * strength)`` steps run from them noised).
    cond / uncond: text conditioning (see :func:`as_text_condition`); ``uncond`` defaults to an
        all-padding negative. Classifier-free guidance (batch [uncond, cond]) runs when cfg > 1.
    options: :class:`SamplingOptions` (steps, cfg, sampler, seed, strength, context windows,
        interrupt, ...; the release defaults when None). The noise comes from ``noise``, else from
        ``generator``, else from a CPU generator seeded with ``options.seed``, drawn on the CPU so
        a seed gives the same video on every device; the same generator feeds ``euler_a``.
    inpaint: :class:`InpaintCondition` (image-to-video / start+end frames): read by 12-channel
        models as extra input channels; 4-channel models hold its held latents by blending after
        every step. 12-channel models without one read zeros (the reference pipeline's "no mask"
        input); pass :func:`~.inpaint.all_generated_condition` instead to give them what
        :func:`generate` gives (the reference's text-to-video with an InP model).
    clip_embeds: (1 or B, 768) CLIP image embeddings for 12-channel models, used in the
        conditional branch for the last ``options.clip_apply_ratio`` share of the steps only.
    progress: ``progress(step, steps, preview=x0)`` after every step, ``x0`` the current clean
        estimate (scaled latents, for a cheap preview); raise from it to cancel. A run whose
        latents turn NaN / inf stops at that step with one line saying what to suspect.
    """
    from .samplers import sample
    from .schedule import make_plan

    options = options or SamplingOptions()
    is_inp = _check_latents(transformer, latents)
    device, dtype = transformer.device, transformer.dtype
    batch, latent_channels, length = latents.shape[:3]
    guidance = Guidance(cond, uncond, batch, options.cfg, options.guidance_rescale, latent_channels, device, dtype)

    if generator is None:  # also feeds euler_a's per-step noise when `noise` is given
        generator = torch.Generator("cpu").manual_seed(options.seed)
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32, device=generator.device)
    noise = noise.float().to(device)
    plan = make_plan(options.sampler, options.steps, karras=options.karras, denoise=options.strength)
    image = _image_condition(is_inp, latents, inpaint, clip_embeds if is_inp else None, guidance.active, plan,
                             noise, options, device, dtype)
    windows = None if options.context is None else [(w, weight.to(device))
                                                    for w, weight in options.context.plan(length)]
    whole = tuple(range(length))
    cache = options.step_cache
    if cache is not None:
        cache.begin(plan.steps)

    def predict(x, t, step, window):
        # one step-cache state per window and conditioning phase: each sees its own DiT input
        cached = {} if cache is None else {"step_cache": cache.at(step, (window, image.phase(step)))}
        out = transformer(hidden_states=guidance.batch(take_frames(x, window)), timestep=guidance.batch(t),
                          **guidance.text_inputs(), **image.dit_inputs(window, step), **cached)
        return guidance.eps(out)

    def model_fn(x, t, step):
        if windows is None:
            return predict(x, t, step, whole)
        return fuse_windows(lambda window: predict(x, t, step, window), windows, x)

    def after_step(step, x, denoised):
        x = image.after_step(step, x)
        _stop_if_not_finite(step + 1, plan.steps, x)
        return x

    init = latents.float().to(device) * scaling_factor if options.strength < 1.0 else None
    try:
        with torch.no_grad(), interrupt_between_blocks(transformer, options.interrupt):
            out = sample(model_fn, noise, sampler=options.sampler, steps=options.steps, karras=options.karras,
                         generator=generator, denoise=options.strength, init_latents=init,
                         progress=with_interrupt(progress, options.interrupt), callback=after_step)
    finally:
        if cache is not None:  # its residuals are activation-sized: not kept through the VAE decode
            cache.end()
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

    ``inp``: True for a 12-channel (InP) DiT (encoded mask + kept frames), False for a 4-channel
    one (held latents + generate mask for blending), None when the DiT is not known yet (a graph
    node that only has the VAE): both are built and :func:`denoise` takes what its model reads.
    A 12-channel model without images still needs its all-generated condition (``inp=True``).
    For a video, ``video_latents`` are its own latents (the initial latents)."""
    if video is not None:
        if start_image is not None or end_image is not None:
            raise InputError("video-to-video takes no start or end image; pass either a video or images")
        if video.shape[-3] < frames:
            raise InputError(f"the input video has {video.shape[-3]} frames but {frames} were asked for; "
                             f"ask for at most {video.shape[-3]} frames")
        return encode_source(vae, video_source(video, width, height), frames, vae.scaling_factor,
                             want_mask=inp is not False, want_video=True, progress=progress)
    if start_image is None and end_image is None:
        return all_generated_condition(vae, frames, width, height, progress=progress) if inp else None
    condition = InpaintCondition()
    if inp is not False:
        condition = encode_source(vae, image_to_video_source(frames, width, height, start_image, end_image),
                                  frames, vae.scaling_factor, want_mask=True, want_video=False, progress=progress)
    if inp is not True:
        held = held_image_latents(vae, frames, width, height, start_image, end_image, progress=progress)
        condition = dataclasses.replace(condition, video_latents=held.video_latents,
                                        generate_mask=held.generate_mask)
    return condition


def generate(components: Components, prompt, negative_prompt="", options: SamplingOptions | None = None,
             **video) -> torch.Tensor:
    """Prompt (+ optional start / end images or an input video) -> video (B, 3, F, H, W) in [0, 1].

    Encodes the prompts with ``components.text_encoder``, then :func:`generate_encoded` (``video``:
    its size, frames, images, seam, ... keywords)."""
    cond, uncond = encode_prompts(components, prompt, negative_prompt)
    return generate_encoded(components, cond, uncond, options, **video)


def generate_encoded(components: Components, cond, uncond=None, options: SamplingOptions | None = None, *,
                     width: int = 672, height: int = 384, frames: int = 144,
                     start_image: torch.Tensor | None = None, end_image: torch.Tensor | None = None,
                     video: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     seam: str | None = None, progress: ProgressFn | None = None) -> torch.Tensor:
    """:func:`generate` from encoded text conditioning (see :func:`as_text_condition`).

    ``options``: :class:`SamplingOptions` (the release's when None: DPM++ 25 steps, CFG 7,
    seed 43). ``frames`` = 1 makes an image. Sizes are floored to what the VAE and the DiT take
    and frame counts to what the VAE decodes exactly (each change logged). ``options.strength``
    < 1 with ``video`` is video-to-video. ``generator`` (CPU) overrides ``options.seed`` (the
    long-video loop shares one across chunks). ``options.interrupt`` is also checked between VAE
    windows. Size defaults are the v3 release's (672x384, 144 frames)."""
    options = options or SamplingOptions()
    vae = components.vae
    width, height = shape_rules.adjust_size(width, height, vae)
    frames = shape_rules.adjust_frames(frames, vae)
    if video is None and options.strength < 1.0:
        raise InputError(f"strength {options.strength} < 1 needs an input video (video-to-video); pass a video "
                         f"or use strength 1.0")
    # denoise checks the interrupt itself; the VAE's windows get it through their progress
    vae_progress = with_interrupt(progress, options.interrupt)
    cond = as_text_condition(cond)
    batch = cond.embeds.shape[0]
    is_inp = model_channels(components.transformer) != int(vae.config.get("latent_channels", 4))
    clip_embeds = None
    if is_inp and start_image is not None:
        first = start_image if start_image.ndim == 3 else start_image[0]
        clip_embeds = image_condition(components, first[None])
    with components.using(vae):
        inpaint = encode_condition(vae, frames, width, height, start_image=start_image, end_image=end_image,
                                   video=video, inp=is_inp, progress=vae_progress)
    shape = shape_rules.latent_shape(vae, frames, width, height, batch)
    if video is not None:
        latents = inpaint.video_latents.expand(shape) / vae.scaling_factor
        # the 12-channel model reads its all-generated input; for a 4-channel one nothing is held:
        # the strength alone decides what survives
        inpaint = dataclasses.replace(inpaint, video_latents=None) if is_inp else None
    else:
        latents = torch.zeros(shape)
    with components.using(components.transformer) as transformer:
        latents = denoise(transformer, latents, cond, uncond, options, generator=generator,
                          scaling_factor=vae.scaling_factor, inpaint=inpaint, clip_embeds=clip_embeds,
                          progress=progress)
    return decode(components, latents, seam=seam, progress=vae_progress)
