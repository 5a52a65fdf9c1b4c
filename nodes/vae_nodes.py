"""Slice-VAE nodes: load the EasyAnimate video VAE, encode frames to a 5-D LATENT, decode a LATENT
slice by slice to IMAGE frames (with a seam option)."""

from __future__ import annotations

import logging

import torch

from ..easyanimate_core.checkpoints import detect
from ..easyanimate_core.errors import InputError
from ..easyanimate_core.models.vae import SEAM_OPTIONS, Tiling, VideoVAE, load_vae
from . import host
from .latent_conditions import ALL_GENERATED_KEY, AllGenerated

log = logging.getLogger(__name__)

CATEGORY = "VideoDiT/vae"

FRAME_RULE = ("Slice VAE (v3): 1 frame, or a multiple of 8 (+1): 8 frames -> 2 latents, 16 -> 4, 17 -> 5, "
              "144 -> 36. MagViT VAE (v2): 9-frame chunks -> 3 latents each.")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = {"auto (config.json)": None, "v3 slice VAE": "v3", "v2 MagViT VAE": "v2"}


def _check_vae(vae):
    if not isinstance(vae, VideoVAE):
        raise InputError(f"the vae input is a {type(vae).__name__}, expected the VDIT_VAE of a "
                         f"'Load EasyAnimate Slice VAE' node; connect that node's output.")


def _run_on_device(vae, window_frames, height, width):
    """Let the host make room for the VAE plus about one window of activations."""
    bytes_per = torch.finfo(vae.dtype).bits // 8
    activations = window_frames * height * width * vae.config["ch"] * bytes_per * 8
    host.load_models([vae], memory_required=activations)


class VDiT_LoadSliceVAE:
    DESCRIPTION = ("Loads the EasyAnimate video VAE (v3 slice VAE or v2 MagViT) from a vae/ folder, a model "
                   "folder holding one, or a single weights file in models/easyanimate.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (host.model_files(loadable=detect.VAE), {"tooltip": "A vae/ folder (config.json + weights), an EasyAnimate "
                                                         "model folder with a vae/ subfolder, or a weights file."}),
            "dtype": (["auto", "fp32", "bf16", "fp16", "fp16 (compute in fp32)"],
                      {"default": "auto", "tooltip": "Weight precision. auto: bf16 on GPUs that support it, "
                                                     "else fp32. 'fp16 (compute in fp32)' stores fp16 and upcasts "
                                                     "each layer, avoiding fp16 overflow."}),
            "mode": (list(MODES), {"default": "auto (config.json)",
                                   "tooltip": "Which VAE the weights are. Slice (v3) and MagViT (v2) weights look "
                                              "the same; a loose file without config.json needs v3 or v2 here."}),
            "mini_batch_encoder": ("INT", {"default": 0, "min": 0, "max": 64,
                                           "tooltip": "Frames per encoder slice; 0 = from the config (v3: 8, v2: 9). "
                                                      "Other values change the frame arithmetic and quality."}),
            "mini_batch_decoder": ("INT", {"default": 0, "min": 0, "max": 16,
                                           "tooltip": "Latents per decoder slice; 0 = from the config (v3: 2, v2: 3)."}),
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 8,
                                  "tooltip": "Spatial tile size in pixels for large frames (multiple of 8, >= 32); "
                                             "0 = no tiling. Tiles overlap and are blended."}),
            "tile_overlap": ("INT", {"default": 96, "min": 0, "max": 2048, "step": 8,
                                     "tooltip": "Overlap between tiles in pixels (multiple of 8, at most half the tile)."}),
        }}

    RETURN_TYPES = ("VDIT_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The video VAE, for VideoDiT encode / decode nodes.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, vae_name, dtype="auto", mode="auto (config.json)", mini_batch_encoder=0,
             mini_batch_decoder=0, tile_size=0, tile_overlap=96):
        if mode not in MODES:
            raise InputError(f"unknown VAE mode {mode!r}; choose one of {', '.join(MODES)}.")
        upcast = dtype == "fp16 (compute in fp32)"
        if upcast:
            weight_dtype = torch.float16
        elif dtype == "auto":
            device = host.torch_device()
            gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
            weight_dtype = torch.bfloat16 if gpu_bf16 else torch.float32
        elif dtype in DTYPES:
            weight_dtype = DTYPES[dtype]
        else:
            raise InputError(f"unknown dtype {dtype!r}; choose auto, fp32, bf16, fp16 or 'fp16 (compute in fp32)'.")
        vae = load_vae(host.model_path(vae_name), dtype=weight_dtype, device=host.offload_device(),
                       preset=MODES[mode], upcast=upcast)
        for key, value in (("mini_batch_encoder", mini_batch_encoder), ("mini_batch_decoder", mini_batch_decoder)):
            if value:
                vae.config[key] = int(value)
        vae.tiling = Tiling(tile_size, tile_overlap) if tile_size else None
        return (vae,)


def usable_frames(vae: VideoVAE, frames: int) -> int:
    """The largest frame count <= ``frames`` that decodes back to itself (v3: 1, 8k or 8k+1)."""
    for n in range(frames, 0, -1):
        if vae.decoded_frames(vae.latent_frames(n)) == n:
            return n
    return 1


class VDiT_VAEEncode:
    DESCRIPTION = ("Encodes IMAGE frames (one video) into a 5-D LATENT for the VideoDiT sampler, slice by slice. "
                   "The latents are the posterior mean multiplied by the VAE's scaling_factor (the sampler's "
                   "space). Frames that do not fill a whole slice are dropped from the end, and height / width are "
                   "centre-cropped to multiples of 8. " + FRAME_RULE)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VDIT_VAE", {"tooltip": "From 'Load EasyAnimate Slice VAE'."}),
            "pixels": ("IMAGE", {"tooltip": "The video's frames in order (a batch of images = one video). "
                                            + FRAME_RULE + " Extra frames at the end are dropped."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Scaled latents {samples: (1, 4, latent frames, H/8, W/8)}.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, vae, pixels):
        _check_vae(vae)
        if not torch.is_tensor(pixels) or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            shape = tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__
            raise InputError(f"pixels must be an IMAGE batch shaped (frames, height, width, 3), found {shape}; "
                             f"connect an IMAGE output (e.g. Load Image / a video loader).")
        frames, height, width = pixels.shape[:3]
        f = vae.spatial_factor
        h, w = height // f * f, width // f * f
        if h == 0 or w == 0:
            raise InputError(f"pixels are {height}x{width}, smaller than the VAE's {f}-pixel grid; use frames of "
                             f"at least {f}x{f}.")
        keep = usable_frames(vae, frames)
        if keep != frames or (h, w) != (height, width):
            log.warning("VAE encode: using %d of %d frames at %dx%d (was %dx%d); %s", keep, frames, h, w,
                        height, width, FRAME_RULE)
        top, left = (height - h) // 2, (width - w) // 2
        # [0, 1] -> [-1, 1] in the IMAGE's own memory space; the VAE moves one slice at a time to its device.
        video = pixels[:keep, top:top + h, left:left + w, :3].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        _run_on_device(vae, vae.mini_batch_encoder, h, w)
        with torch.no_grad():
            # progress reports its real total with every update
            latents = vae.encode(video, progress=host.progress(1)).mean * vae.scaling_factor
        samples = latents.to(host.intermediate_device(), torch.float32)
        return ({"samples": samples, ALL_GENERATED_KEY: AllGenerated(vae)},)


class VDiT_VAEDecode:
    DESCRIPTION = ("Decodes a 5-D LATENT (scaled, as the VideoDiT sampler makes it) to IMAGE frames, 2 latents "
                   "(8 frames) at a time, so memory does not grow with the clip length. seam: 'smooth' is the "
                   "published pipelines' post-processing (re-encode + decode, averaged; halves slice seams, costs "
                   "a second encode and decode); 'blend' decodes one extra window across each slice boundary and "
                   "cross-fades it in (about one extra decode; v3 only, v2 uses 'smooth'); 'none' is the raw slice decode. "
                   "Latents decode to: " + FRAME_RULE)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VDIT_VAE", {"tooltip": "From 'Load EasyAnimate Slice VAE'."}),
            "samples": ("LATENT", {"tooltip": "Scaled latents (1, 4, L, H/8, W/8). Slice VAE: even L -> 4L frames, "
                                              "odd L -> 4L-3 frames (36 -> 144, 5 -> 17). A 4-D image latent "
                                              "decodes each image as one frame."}),
            "seam": (list(SEAM_OPTIONS), {"default": "blend",
                                          "tooltip": "How to hide the jump at every slice boundary (every 8 "
                                                     "frames): blend (about one extra decode; v3 only, a v2 MagViT "
                                                     "VAE uses smooth instead), smooth (as published: re-encode "
                                                     "+ decode, averaged), none."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Seed of the posterior sample that 'smooth' draws; other seams ignore it."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Decoded frames (frames, H, W, 3) in [0, 1]; several videos are concatenated.",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, vae, samples, seam="blend", seed=0):
        _check_vae(vae)
        latents = samples.get("samples") if isinstance(samples, dict) else None
        if not torch.is_tensor(latents) or latents.ndim not in (4, 5) or latents.shape[1] != vae.latent_channels:
            shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise InputError(f"samples must be a LATENT with {vae.latent_channels}-channel latents shaped (batch, "
                             f"{vae.latent_channels}, frames, h, w), found {shape}; connect a VideoDiT sampler or "
                             f"VAE encode output.")
        if latents.ndim == 4:  # a batch of image latents: each one a 1-frame video
            latents = latents.unsqueeze(2)
        if seam == "blend" and not vae.slice_mode:
            # documented adjustment: v2 chunks start with a single-frame latent, so no shifted window exists
            log.info("VAE decode: seam 'blend' needs the v3 slice VAE; using 'smooth' for this v2 MagViT VAE.")
            seam = "smooth"
        b, _, n, h, w = latents.shape
        f = vae.spatial_factor
        frames = vae.decoded_frames(n)
        # Decode straight into the IMAGE buffer (channels last): no extra whole-video copy.
        images = torch.empty(b, frames, h * f, w * f, vae.config["out_channels"], dtype=torch.float32,
                             device=host.intermediate_device())
        _run_on_device(vae, vae.decoded_frames(vae.mini_batch_decoder), h * f, w * f)
        with torch.no_grad():
            vae.decode(latents / vae.scaling_factor, progress=host.progress(1), seam=seam, seed=seed,
                       out=images.permute(0, 4, 1, 2, 3))
            images.mul_(0.5).add_(0.5).clamp_(0, 1)
        return (images.reshape(b * frames, h * f, w * f, -1),)


NODE_CLASS_MAPPINGS = {
    "VDiT_LoadSliceVAE": VDiT_LoadSliceVAE,
    "VDiT_VAEEncode": VDiT_VAEEncode,
    "VDiT_VAEDecode": VDiT_VAEDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VDiT_LoadSliceVAE": "Load EasyAnimate Slice VAE",
    "VDiT_VAEEncode": "VAE Encode (EasyAnimate video)",
    "VDiT_VAEDecode": "VAE Decode (EasyAnimate video, slice-wise)",
}
