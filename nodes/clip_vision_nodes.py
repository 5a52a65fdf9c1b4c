"""CLIP image encoder loader for image-to-video with EasyAnimate v3 InP (12-channel) models.

The releases ship the encoder as an ``image_encoder/`` folder (transformers
CLIPVisionModelWithProjection + preprocessor config); native ComfyUI CLIP-vision files work too,
through Load CLIP Vision + CLIP Vision Encode into the image-to-video node's clip_vision_output.
"""

from __future__ import annotations

from ..easyanimate_core.checkpoints import detect
from ..easyanimate_core.models.clip_vision import ClipImageEncoder
from . import host
from .choices import LOAD_DTYPES, check_choice


class VDiT_LoadCLIPVision:
    DESCRIPTION = ("Loads the CLIP image encoder of an EasyAnimate InP release (its image_encoder/ folder in "
                   "models/easyanimate). The image-to-video node uses it to embed the start image.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": (host.model_files(loadable=detect.CLIP_VISION), {"tooltip": "An image_encoder/ folder (config.json + weights)."}),
            "dtype": (list(LOAD_DTYPES), {"default": "auto", "tooltip": "Weight precision; auto keeps the stored one."}),
        }}

    RETURN_TYPES = ("VDIT_CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("CLIP image encoder for 'EasyAnimate Image to Video'.",)
    FUNCTION = "load"
    CATEGORY = "VideoDiT/loaders"

    def load(self, clip_name, dtype="auto"):
        dtype = LOAD_DTYPES[check_choice("dtype", dtype, LOAD_DTYPES)]
        return (ClipImageEncoder.load(host.model_path(clip_name), dtype=dtype, device=host.offload_device()),)


NODE_CLASS_MAPPINGS = {"VDiT_LoadCLIPVision": VDiT_LoadCLIPVision}
NODE_DISPLAY_NAME_MAPPINGS = {"VDiT_LoadCLIPVision": "Load EasyAnimate CLIP Vision"}
