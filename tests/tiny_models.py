"""Tiny random models in the published folder layouts, for pipeline, node, training and demo tests.

Every builder is seeded, so the same call gives the same weights. Sizes: 32x32 frames, DiT
hidden 32 (2 heads x 16) with 2 layers, a 4-level slice VAE with 8-16 channels, CLIP ViT with
hidden 32 and the real 768-d projection (the DiT's ``clip_projection`` takes 768).

The video model's "starts as a no-op" layers (motion-module ``proj_out``, U-ViT
``long_connect_fc``, ``clip_projection.linear_2``) are re-drawn small and random, so tests see the
motion modules, skips and CLIP tokens act (zeros would hide a wiring mistake).

Folder layout (as the EasyAnimate v3 releases)::

    root/transformer/{config.json, diffusion_pytorch_model.safetensors}
    root/vae/{config.json, diffusion_pytorch_model.safetensors}
    root/image_encoder/{config.json, model.safetensors, preprocessor_config.json}
    root/text_encoder/, root/tokenizer/   (tests/tiny_text.py)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LATENT_SIZE = 4        # 32 px / 8
CAPTION_CHANNELS = 32  # the tiny T5's d_model


def _motion_kwargs(attention_types, heads=2):
    return {"num_attention_heads": heads, "num_transformer_block": 1,
            "attention_block_types": list(attention_types), "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": 4096, "temporal_attention_dim_div": 1,
            "block_size": 1}


def tiny_dit_config(in_channels: int = 12, caption_channels: int = CAPTION_CHANNELS, heads: int = 2,
                    layers: int = 2) -> dict:
    """A v3-shaped config (hybrid motion modules) at toy size: hidden ``16 * heads``, ``layers``
    blocks; ``in_channels`` 4 or 12. U-ViT is on from 4 layers (2 layers have no skip; the
    loaders read it off the weights)."""
    return {
        "activation_fn": "gelu-approximate", "attention_bias": True, "attention_head_dim": 16,
        "caption_channels": caption_channels, "cross_attention_dim": 16 * heads, "in_channels": in_channels,
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "norm_type": "ada_norm_single",
        "num_attention_heads": heads, "num_embeds_ada_norm": 1000, "num_layers": layers, "out_channels": 8,
        "patch_size": 2, "sample_size": LATENT_SIZE,
        "basic_block_type": "global_motionmodule", "motion_module_type": "Vanilla",
        "enable_uvit": layers >= 4,
        "motion_module_kwargs_even": _motion_kwargs(["Temporal_Self", "Temporal_Self"], heads),
        "motion_module_kwargs_odd": _motion_kwargs(["Temporal_Self", "Global_Self"], heads),
    }


def tiny_vae_config() -> dict:
    """A v3 slice VAE (8-frame slices, 2-latent decode slices) with 8-16 channels."""
    return {
        "in_channels": 3, "out_channels": 3, "ch": 8, "ch_mult": [1, 2, 2, 2],
        "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 4,
        "mid_block_num_attention_heads": 1, "scaling_factor": 0.1825,
        "slice_compression_vae": True, "mini_batch_encoder": 8, "mini_batch_decoder": 2,
    }


def build_dit(in_channels: int = 12, seed: int = 0, caption_channels: int = CAPTION_CHANNELS, **size):
    from easyanimate_core.models.transformer import VideoTransformer

    torch.manual_seed(seed)
    model = VideoTransformer.from_config(tiny_dit_config(in_channels, caption_channels, **size))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.any():  # zero-initialised no-op layers: make them act
                param.normal_(0, 0.02)
    return model.eval()


def build_vae(seed: int = 0):
    from easyanimate_core.models.vae import VideoVAE

    torch.manual_seed(seed)
    return VideoVAE.from_config(tiny_vae_config()).eval()


def build_clip(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=224, patch_size=32, projection_dim=768)
    return CLIPVisionModelWithProjection(config).eval()


def _save_diffusers(folder: Path, model) -> Path:
    from easyanimate_core.checkpoints import save_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(model.config, indent=1))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", tensors)
    return folder


def save_dit(folder, in_channels: int = 12, seed: int = 0) -> Path:
    return _save_diffusers(Path(folder), build_dit(in_channels, seed))


def save_vae(folder, seed: int = 0) -> Path:
    return _save_diffusers(Path(folder), build_vae(seed))


def save_clip(folder, seed: int = 0) -> Path:
    folder = Path(folder)
    build_clip(seed).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_processor_type": "CLIPImageProcessor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 224}}, indent=1))
    return folder


def save_model_folder(root, in_channels: int = 12, seed: int = 0, text: bool = True) -> Path:
    """A release-shaped model folder: transformer/, vae/, (InP) image_encoder/ and, with
    ``text``, the tiny T5's text_encoder/ and tokenizer/."""
    from tiny_text import write_tiny_text_encoder

    root = Path(root)
    save_dit(root / "transformer", in_channels, seed)
    save_vae(root / "vae", seed)
    if in_channels == 12:
        save_clip(root / "image_encoder", seed)
    if text:
        write_tiny_text_encoder(root, seed)
    return root


def load_components(root, **options):
    """Every model of a :func:`save_model_folder` folder through the real loaders."""
    from easyanimate_core.sampling.pipeline import load_components as load

    root = Path(root)
    clip = root / "image_encoder" if (root / "image_encoder").is_dir() else None
    return load(root, root, root, clip=clip, **options)
