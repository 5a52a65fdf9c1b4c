"""Sampling nodes: empty video latent, image-to-video conditioning, context-window options and the
video DiT sampler.

LATENTs are in the DiT's space (VAE latents times ``scaling_factor``), as the slice-VAE encode
and decode nodes make and expect them, so the sampler needs no VAE. CONDITIONING is ComfyUI's
list ``[[embeds (B, N, C), {...}]]``: native ``CLIPTextEncode`` output (no mask) works as it is,
and the pack's text encode nodes add ``attention_mask``. Image-to-video puts its encoded start /
end frames and CLIP embedding into the cond dicts under pack-prefixed keys, as native img2vid
nodes do with theirs. The empty latents carry, under another such key, what a 12-channel (InP)
model reads when no frame is kept, encoded by their VAE on the sampler's first request, so the
sampler gives such a model exactly what ``pipeline.generate`` gives it.
"""

from __future__ import annotations

import logging

import torch

from ..easyanimate_core.errors import InputError
from ..easyanimate_core.models.handle import ModelHandle
from ..easyanimate_core.sampling import shape_rules
from ..easyanimate_core.sampling.context import FUSE_MODES, ContextWindows
from ..easyanimate_core.sampling.guidance import uses_guidance
from ..easyanimate_core.sampling.options import SamplingOptions
from ..easyanimate_core.sampling.pipeline import encode_condition, model_channels
from ..easyanimate_core.sampling.schedule import KARRAS_SAMPLERS, SAMPLERS
from ..easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD, StepCache
from . import host
from .choices import check_choice
from .latent_conditions import ALL_GENERATED_KEY, AllGenerated, moved

log = logging.getLogger(__name__)

CATEGORY = "VideoDiT/sampling"

# Keys the pack puts into ComfyUI cond dicts (prefixed: cond dicts are shared with other packs).
INPAINT_KEY = "vdit_inpaint"
CLIP_EMBEDS_KEY = "vdit_clip_embeds"

SCHEDULERS = ("normal", "karras")

FRAME_RULE = ("Slice VAE (v3): 1 frame (an image) or a multiple of 8, optionally +1 (8, 9, 16, 17, ... 144); "
              "8 frames make 2 latent frames. Other counts are floored to the nearest valid one.")
SIZE_RULE = ("A multiple of the VAE's downsampling times the DiT's 2x2 patches: 16 with the releases' 8x VAE, 8 "
             "with the shipped demo model's 4x VAE; other sizes are floored.")
RELEASE_SIZES = (" The shipped demo model makes 32x32, 16 frames (seconds on a CPU); the v3 releases make "
                 "672x384 or 384x672 and 512x512 at up to 144 frames (a GPU's work).")
# What the shipped default model (models/vdit_default/generate.yaml) makes: a new node runs in seconds.
DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_LENGTH = 32, 32, 16
MAX_SIZE = 4096
MAX_FRAMES = 4096


def _check_vae(vae):
    if not hasattr(vae, "latent_frames") or not hasattr(vae, "scaling_factor"):
        raise InputError(f"the vae input is a {type(vae).__name__}, expected the VDIT_VAE of a "
                         f"'Load EasyAnimate Slice VAE' node; connect that node's output.")


def _video_size(vae, width: int, height: int, length: int) -> tuple:
    """(width, height, frames) floored to what the DiT and the VAE accept (changes logged)."""
    width, height = shape_rules.adjust_size(width, height, vae)
    return width, height, shape_rules.adjust_frames(length, vae)


def _empty_latent(vae, width: int, height: int, frames: int, batch_size: int) -> dict:
    shape = shape_rules.latent_shape(vae, frames, width, height, batch_size)
    return {"samples": torch.zeros(shape, device=host.intermediate_device()), ALL_GENERATED_KEY: AllGenerated(vae)}


class VDiT_EmptyLatentVideo:
    DESCRIPTION = ("An empty 5-D video LATENT (batch, 4, latent frames, height/8, width/8) for text-to-video "
                   "and text-to-image (length 1). The VAE decides the frame arithmetic: " + FRAME_RULE + " For "
                   "12-channel (InP) models the latent also carries their 'every frame generated' image condition, "
                   "which the sampler has this VAE encode once when such a model first asks for it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VDIT_VAE", {"tooltip": "The VAE that will decode the video; its frame rule sets the "
                                            "number of latent frames, and it encodes the image condition of "
                                            "12-channel (InP) models."}),
            "width": ("INT", {"default": DEFAULT_WIDTH, "min": 8, "max": MAX_SIZE, "step": 8,
                              "tooltip": "Video width in pixels. " + SIZE_RULE + RELEASE_SIZES}),
            "height": ("INT", {"default": DEFAULT_HEIGHT, "min": 8, "max": MAX_SIZE, "step": 8,
                               "tooltip": "Video height in pixels. " + SIZE_RULE + RELEASE_SIZES}),
            "length": ("INT", {"default": DEFAULT_LENGTH, "min": 1, "max": MAX_FRAMES, "step": 1,
                               "tooltip": "Number of video frames. " + FRAME_RULE + RELEASE_SIZES}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Videos sampled together (each with its own noise)."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Zero latents of the video's shape; the sampler starts from pure noise.",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, vae, width, height, length, batch_size=1):
        _check_vae(vae)
        width, height, frames = _video_size(vae, width, height, length)
        return (_empty_latent(vae, width, height, frames, batch_size),)


def _images(image, name: str):
    """ComfyUI IMAGE (k, H, W, C) -> (k, 3, H, W) in [0, 1], or None."""
    if image is None:
        return None
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise InputError(f"{name} must be an IMAGE shaped (images, height, width, 3), found {shape}; "
                         f"connect a Load Image node or another IMAGE output.")
    return image[..., :3].permute(0, 3, 1, 2).float().cpu()


def _with_keys(conditioning, values: dict) -> list:
    """A copy of ComfyUI ``conditioning`` with ``values`` added to every cond dict (never mutates)."""
    return [[embeds, {**extras, **values}] for embeds, extras in conditioning]


def _clip_embeds(clip_vision, clip_vision_output, start):
    if clip_vision is not None and clip_vision_output is not None:
        raise InputError("both clip_vision and clip_vision_output are connected; connect one of them "
                         "(clip_vision encodes the start image itself).")
    if clip_vision_output is not None:
        embeds = getattr(clip_vision_output, "image_embeds", None)
        if not torch.is_tensor(embeds):
            raise InputError("clip_vision_output has no image_embeds; use a CLIP vision model with a projection "
                             "(ViT-L/14, as the EasyAnimate InP image_encoder).")
        return embeds[:1].float().cpu()
    if clip_vision is None:
        return None
    if start is None:
        raise InputError("clip_vision is connected but there is no start_image to encode; connect a start image "
                         "or disconnect clip_vision.")
    host.load_models([clip_vision.model])
    return clip_vision.encode(start[:1]).cpu()


class VDiT_ImageToVideo:
    DESCRIPTION = ("Image-to-video conditioning: keeps start_image as the first frame(s) and end_image as the "
                   "last frame(s), and has the sampler generate the rest. The frames are VAE-encoded both ways "
                   "the models read them (mask + masked video for 12-channel InP models, video latents for "
                   "latent blending with 4-channel models). With an InP model also give the start image's CLIP "
                   "embedding (clip_vision, or a native CLIP_VISION_OUTPUT). Outputs the conditionings and an "
                   "empty LATENT of the video's shape. " + FRAME_RULE)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The prompt's conditioning."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt's conditioning."}),
            "vae": ("VDIT_VAE", {"tooltip": "The VAE used to encode the start / end frames."}),
            "width": ("INT", {"default": DEFAULT_WIDTH, "min": 8, "max": MAX_SIZE, "step": 8,
                              "tooltip": "Video width; images are scaled to cover it and centre-cropped. "
                                         + SIZE_RULE + RELEASE_SIZES}),
            "height": ("INT", {"default": DEFAULT_HEIGHT, "min": 8, "max": MAX_SIZE, "step": 8,
                               "tooltip": "Video height. " + SIZE_RULE + RELEASE_SIZES}),
            "length": ("INT", {"default": DEFAULT_LENGTH, "min": 1, "max": MAX_FRAMES, "step": 1,
                               "tooltip": "Number of video frames. " + FRAME_RULE + RELEASE_SIZES}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Videos sampled together from the same images."}),
        }, "optional": {
            "start_image": ("IMAGE", {"tooltip": "First frame(s) of the video; several images keep several "
                                                 "leading frames."}),
            "end_image": ("IMAGE", {"tooltip": "Last frame(s) of the video (start + end frame interpolation)."}),
            "clip_vision": ("VDIT_CLIP_VISION", {"tooltip": "CLIP image encoder from 'Load EasyAnimate CLIP "
                                                            "Vision'; encodes the start image for InP models."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "Alternatively a native CLIP Vision Encode "
                                                                     "of the start image (ViT-L/14)."}),
        }}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = ("Prompt conditioning carrying the encoded frames and CLIP embedding.",
                       "Negative conditioning carrying the encoded frames (never the CLIP embedding).",
                       "Empty latent of the video's shape for the sampler.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, positive, negative, vae, width, height, length, batch_size=1, start_image=None,
               end_image=None, clip_vision=None, clip_vision_output=None):
        _check_vae(vae)
        width, height, frames = _video_size(vae, width, height, length)
        start, end = _images(start_image, "start_image"), _images(end_image, "end_image")
        clip_embeds = _clip_embeds(clip_vision, clip_vision_output, start)
        extras = {}
        if start is not None or end is not None:
            host.load_models([vae])
            # both forms: the sampler's model (4- or 12-channel) is not known here
            condition = encode_condition(vae, frames, width, height, start_image=start, end_image=end, inp=None,
                                         progress=host.progress(1))
            extras[INPAINT_KEY] = moved(condition, host.intermediate_device())
        positive = _with_keys(positive, {**extras, **({} if clip_embeds is None else {CLIP_EMBEDS_KEY: clip_embeds})})
        negative = _with_keys(negative, extras)
        return positive, negative, _empty_latent(vae, width, height, frames, batch_size)


class VDiT_ContextOptions:
    DESCRIPTION = ("Sliding context windows for long videos: every sampling step runs the DiT on overlapping "
                   "windows of latent frames and blends their predictions, so memory depends on the window "
                   "length, not on the video length. Connect to the sampler's context_options. Counts are in "
                   "latent frames (slice VAE: 1 latent frame = 4 video frames).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "context_length": ("INT", {"default": 16, "min": 1, "max": 1024,
                                       "tooltip": "Latent frames per window (16 = 64 video frames with the "
                                                  "slice VAE). Videos this short or shorter run in one pass."}),
            "context_overlap": ("INT", {"default": 4, "min": 0, "max": 1023,
                                        "tooltip": "Latent frames shared by neighbouring windows; must be less "
                                                   "than context_length. More overlap: smoother, slower."}),
            "fuse_method": (list(FUSE_MODES), {"default": "pyramid",
                                               "tooltip": "How overlapping predictions are blended: pyramid "
                                                          "(window centre weighs most), linear (cross-fade over "
                                                          "the overlap), flat (plain average)."}),
        }, "optional": {
            "context_strides": ("INT", {"default": 2, "min": 1, "max": 8,
                                        "tooltip": "1: contiguous windows only. 2 or more: also windows of every "
                                                   "2nd (4th, ...) latent frame, so frames far apart are sampled "
                                                   "together and the motion runs across the whole video instead of "
                                                   "restarting in each window; slower (about 2x at 2)."}),
        }}

    RETURN_TYPES = ("VDIT_CONTEXT_OPTIONS",)
    RETURN_NAMES = ("context_options",)
    OUTPUT_TOOLTIPS = ("Context-window settings for the VideoDiT sampler.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, context_length, context_overlap, fuse_method="pyramid", context_strides=2):
        return (ContextWindows(int(context_length), int(context_overlap), fuse_method, int(context_strides)),)


def _text_condition(conditioning, name: str):
    """(embeds, mask or None, extras) of the first entry of a ComfyUI CONDITIONING."""
    if not isinstance(conditioning, list) or not conditioning or not torch.is_tensor(conditioning[0][0]):
        raise InputError(f"{name} is not a CONDITIONING; connect a text encode node (VideoDiT T5 Encode, or "
                         f"CLIP Text Encode with a T5 CLIP).")
    if len(conditioning) > 1:
        raise InputError(f"{name} holds {len(conditioning)} conditionings (combined or area prompts); the video "
                         f"DiT takes one prompt, so connect a single text encode.")
    embeds, extras = conditioning[0]
    mask = extras.get("attention_mask")
    if mask is not None and mask.ndim == 3:  # some encoders keep a (B, 1, N) mask
        mask = mask[:, 0]
    return (embeds.float().cpu(), None if mask is None else mask.cpu()), extras


def _latent_samples(latent_image) -> torch.Tensor:
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    if not torch.is_tensor(samples) or samples.ndim != 5:
        shape = tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
        raise InputError(f"latent_image must be a 5-D video LATENT (batch, 4, frames, height/8, width/8), found "
                         f"{shape}; use 'Empty EasyAnimate Latent Video', the image-to-video node or the "
                         f"EasyAnimate VAE encode.")
    return samples


def _check_inpaint(inpaint, latents: torch.Tensor):
    if inpaint is None:
        return
    reference = inpaint.encoded_mask if inpaint.encoded_mask is not None else inpaint.video_latents
    if tuple(reference.shape[2:]) != tuple(latents.shape[2:]):
        raise InputError(f"the image-to-video frames were encoded for {reference.shape[2]} latent frames of "
                         f"{reference.shape[3]}x{reference.shape[4]} but latent_image has {latents.shape[2]} of "
                         f"{latents.shape[3]}x{latents.shape[4]}; connect the image-to-video node's own latent "
                         f"output to the sampler.")


def _all_generated(latent_image: dict, latents: torch.Tensor):
    """The 12-channel model's all-generated condition the LATENT carries, or None (then the model
    reads zeros, the reference pipeline's "no mask" input) with a warning."""
    all_generated = latent_image.get(ALL_GENERATED_KEY)
    if all_generated is None:
        log.warning("latent_image carries no all-generated image condition (it was made by neither 'Empty "
                    "EasyAnimate Latent Video' nor 'EasyAnimate Image to Video'), so the 12-channel (InP) model "
                    "reads an all-zero one; start from one of those nodes for the release's input")
        return None
    return all_generated(latents.shape)


def _activation_bytes(transformer, latents: torch.Tensor, cfg: float, context) -> int:
    """Rough working memory of one DiT call, so the host frees that much besides the weights."""
    batch, _, frames, h, w = latents.shape
    if context is not None:
        frames = min(frames, context.length)
    tokens = frames * (h // 2) * (w // 2)
    width = int(getattr(transformer, "hidden_size", 1152))
    element = torch.finfo(transformer.dtype).bits // 8
    return batch * (2 if uses_guidance(cfg) else 1) * tokens * width * element * 16


class VDiT_Sampler:
    DESCRIPTION = ("Samples a video (or image) with the EasyAnimate DiT: text-to-video from an empty latent, "
                   "image-to-video from the image-to-video node's outputs, video-to-video from encoded frames "
                   "with denoise < 1. Classifier-free guidance runs when cfg > 1. Samplers and schedules "
                   "reproduce diffusers' (the reference pipelines'). Shows per-step progress and previews (when "
                   "previews are on); Cancel stops it within one transformer block.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDIT_MODEL", {"tooltip": "The video DiT (with motion module / LoRAs applied)."}),
            "positive": ("CONDITIONING", {"tooltip": "What the video should show (T5 conditioning; padded to "
                                                     "120 tokens)."}),
            "negative": ("CONDITIONING", {"tooltip": "What to steer away from (used when cfg > 1)."}),
            "latent_image": ("LATENT", {"tooltip": "Empty latent (text-to-video), the image-to-video latent, or "
                                                   "encoded frames for video-to-video (with denoise < 1)."}),
            "seed": ("INT", {"default": 43, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Noise seed; the noise is drawn on the CPU, so a seed gives the same "
                                        "video on every device."}),
            "steps": ("INT", {"default": 25, "min": 1, "max": 1000,
                              "tooltip": "Denoising steps (the release default is 25)."}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale; 1 or less turns guidance off (one model "
                                         "call per step). The release default is 7."}),
            "sampler_name": (list(SAMPLERS), {"default": "dpmpp_2m",
                                              "tooltip": "ddim, euler, euler_a (ancestral), dpmpp_2m (DPM++ 2M, "
                                                         "the release default), unipc."}),
            "scheduler": (list(SCHEDULERS), {"default": "normal",
                                             "tooltip": "Noise levels: normal (diffusers' spacing) or karras "
                                                        "(for " + ", ".join(KARRAS_SAMPLERS) + ")."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "1.0 starts from pure noise. Below 1 (video-to-video) only the last "
                                             "steps run, starting from latent_image noised: lower keeps more of "
                                             "the input."}),
        }, "optional": {
            "context_options": ("VDIT_CONTEXT_OPTIONS", {"tooltip": "Sliding context windows for long videos "
                                                                    "(from 'EasyAnimate Context Options')."}),
            "step_cache": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "Step caching: skip most of the DiT on steps where its input "
                                                f"changed by less than this (0 = off; {DEFAULT_THRESHOLD} is the "
                                                "tested default, higher = faster and further from the uncached "
                                                "result). The first and last steps always run in full."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Sampled latents for the EasyAnimate VAE decode.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
               denoise, context_options=None, step_cache=0.0):
        from ..easyanimate_core.sampling.pipeline import denoise as run_denoise

        check_choice("scheduler", scheduler, SCHEDULERS)
        if context_options is not None and not isinstance(context_options, ContextWindows):
            raise InputError("context_options must come from an 'EasyAnimate Context Options' node.")
        # checked before any work; the host's Cancel is looked at before every DiT block
        options = SamplingOptions(steps=int(steps), cfg=float(cfg), sampler=sampler_name,
                                  karras=scheduler == "karras", seed=int(seed), strength=float(denoise),
                                  context=context_options, interrupt=host.check_interrupt,
                                  step_cache=StepCache(float(step_cache)) if step_cache else None)
        latents = _latent_samples(latent_image)
        cond, extras = _text_condition(positive, "positive")
        uncond, _ = _text_condition(negative, "negative")
        inpaint = extras.get(INPAINT_KEY)
        _check_inpaint(inpaint, latents)
        if not isinstance(model, ModelHandle):
            raise InputError(f"the model input is a {type(model).__name__}, expected the VDIT_MODEL of a "
                             f"'Load EasyAnimate DiT' node; connect that node's output.")
        if inpaint is None and model_channels(model.model) == 3 * latents.shape[1]:  # InP
            inpaint = _all_generated(latent_image, latents)
        # the handle applies its motion module, LoRAs and motion scale for the duration
        with model.patched() as transformer:
            host.load_models([transformer], memory_required=_activation_bytes(transformer, latents, cfg,
                                                                              context_options))
            try:
                samples = run_denoise(transformer, latents, cond, uncond, options, scaling_factor=1.0,
                                      inpaint=inpaint, clip_embeds=extras.get(CLIP_EMBEDS_KEY),
                                      progress=host.progress(max(1, int(options.steps * options.strength))))
            finally:
                host.release_models([transformer])
        out = dict(latent_image)
        out.pop("noise_mask", None)  # the input's mask does not describe the new video
        out["samples"] = samples.to(host.intermediate_device())
        return (out,)


NODE_CLASS_MAPPINGS = {
    "VDiT_EmptyLatentVideo": VDiT_EmptyLatentVideo,
    "VDiT_ImageToVideo": VDiT_ImageToVideo,
    "VDiT_ContextOptions": VDiT_ContextOptions,
    "VDiT_Sampler": VDiT_Sampler,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VDiT_EmptyLatentVideo": "Empty EasyAnimate Latent Video",
    "VDiT_ImageToVideo": "EasyAnimate Image to Video",
    "VDiT_ContextOptions": "EasyAnimate Context Options",
    "VDiT_Sampler": "EasyAnimate Sampler",
}
