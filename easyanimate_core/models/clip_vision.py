"""CLIP image encoder for image-to-video (EasyAnimate v3 InP models).

The 12-channel DiT takes the start image's CLIP ``image_embeds`` (768-d for the released
ViT-L/14 ``image_encoder/`` folder) through its ``clip_projection`` as 8 extra text tokens. The
model is transformers' ``CLIPVisionModelWithProjection`` loaded from a local folder; the image
preprocessing (shortest side to 224 with bicubic antialiasing, centre crop, CLIP mean/std) is done
in torch so no torchvision / PIL round trip is needed and tensors stay on their device.
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError

# OpenAI CLIP's normalisation; used when the folder has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_MODEL_TYPE = "clip_vision_model"  # config.json of CLIPVisionModel(WithProjection) folders


class ClipImageEncoder:
    """``encode(images)`` -> ``image_embeds`` (B, projection_dim); images (B, 3, H, W) in [0, 1]."""

    def __init__(self, model, size: int = 224, crop: int = 224, mean=CLIP_MEAN, std=CLIP_STD):
        self.model = model.eval().requires_grad_(False)
        self.size, self.crop = int(size), int(crop)
        self.mean, self.std = tuple(mean), tuple(std)

    @classmethod
    def load(cls, path: str, dtype: torch.dtype | None = None, device=None) -> ClipImageEncoder:
        """Load a ``CLIPVisionModelWithProjection`` folder (config.json + weights, e.g. the
        ``image_encoder/`` folder of an EasyAnimate v3 InP release). Any other model, or weights
        that do not fill the configured model exactly, is a :class:`CheckpointError`: a partial
        load would leave random weights behind."""
        fix = "point it at the image_encoder/ folder of an EasyAnimate InP release"
        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise CheckpointError(f"CLIP image encoder {path!r} is not a folder with a config.json; {fix}")
        try:
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"CLIP image encoder {path!r} has an unreadable config.json ({error}); "
                                  f"{fix}") from error
        found = config.get("model_type") if isinstance(config, dict) else None
        if found != VISION_MODEL_TYPE:
            raise CheckpointError(f"CLIP image encoder {path!r} has config.json model_type {found!r}, expected "
                                  f"{VISION_MODEL_TYPE!r} (a CLIPVisionModelWithProjection); {fix}")
        from transformers import CLIPVisionModelWithProjection

        from ..checkpoints import check_finite, load_state_dict
        from ..checkpoints.io import transformers_weight_files

        # Read once through the pack's own reader first: weights-only pickles and safetensors with
        # one-line errors (transformers would raise torch's multi-line unpickling error), and no
        # NaN / inf weights.
        files = transformers_weight_files(path)
        if not files:
            raise CheckpointError(f"CLIP image encoder {path!r} holds no model.safetensors or pytorch_model.bin "
                                  f"weights; {fix} with its weights")
        for file in files:
            check_finite(load_state_dict(file), str(file))
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                path, local_files_only=True, torch_dtype=dtype, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: weight shapes off the config
            raise CheckpointError(f"CLIP image encoder {path!r} could not be loaded as "
                                  f"CLIPVisionModelWithProjection ({error}); {fix}") from error
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        if missing or unexpected or info["error_msgs"]:
            raise CheckpointError(f"CLIP image encoder {path!r} has weights that do not fit its config.json "
                                  f"(missing {_names(missing)}, unexpected {_names(unexpected)}); {fix} with "
                                  f"its own weights")
        encoder = cls(model, **_preprocessor_settings(path))
        if device is not None:
            encoder.to(device)
        return encoder

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> ClipImageEncoder:
        self.model.to(device=device, dtype=dtype)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised (B, 3, crop, crop) pixel values."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"the CLIP image must be a (batch, 3, height, width) tensor, got shape "
                             f"{tuple(images.shape)}; pass RGB images with channels first")
        images = images.float()
        h, w = images.shape[-2:]
        # Shortest side to `size`, aspect kept (as CLIPImageProcessor does), then centre crop.
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, int(h * scale)), max(self.size, int(w * scale))
        images = F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)
        top, left = (new_h - self.crop) // 2, (new_w - self.crop) // 2
        images = images[:, :, top:top + self.crop, left:left + self.crop]
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        return (images - mean) / std

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``image_embeds`` (B, projection_dim) in float32."""
        pixels = self.preprocess(images).to(self.device, self.dtype)
        return self.model(pixel_values=pixels).image_embeds.float()


def _names(keys: list, shown: int = 3) -> str:
    """'none', or the first few weight names and how many more."""
    if not keys:
        return "none"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _preprocessor_settings(path: str) -> dict:
    """Resize / crop / normalisation from the folder's preprocessor_config.json, if present."""
    config_path = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(config_path):
        return {}
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    settings = {}
    size = config.get("size")
    if isinstance(size, dict):
        size = size.get("shortest_edge", size.get("height"))
    if size:
        settings["size"] = size
    crop = config.get("crop_size")
    if isinstance(crop, dict):
        crop = crop.get("height")
    if crop:
        settings["crop"] = crop
    if config.get("image_mean"):
        settings["mean"] = config["image_mean"]
    if config.get("image_std"):
        settings["std"] = config["image_std"]
    return settings
