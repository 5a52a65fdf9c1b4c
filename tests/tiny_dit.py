"""Tiny DiT configurations shared by the DiT tests and ``bench/bench_dit.py``.

Plain PixArt ``config.json`` keys (so diffusers' ``PixArtTransformer2DModel`` accepts the same
dict) at width 64 = 2 heads x 32, 4 latent channels and 32-channel captions, plus the motion
layouts of the releases scaled to that width.
"""


def tiny_pixart(num_layers: int = 2, **overrides) -> dict:
    """A PixArt-alpha config of ``num_layers`` blocks; ``overrides`` replace or add keys."""
    return {"num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 4, "out_channels": 8,
            "num_layers": num_layers, "cross_attention_dim": 64, "attention_bias": True, "sample_size": 16,
            "patch_size": 2, "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
            "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
            "caption_channels": 32, **overrides}


# v3 layout: temporal motion modules on even blocks, temporal + global on odd ones, U-ViT skips.
HYBRID = {"basic_block_type": "global_motionmodule", "motion_module_type": "Vanilla", "enable_uvit": True,
          "motion_module_kwargs_even": {"num_attention_heads": 2, "num_transformer_block": 1,
                                        "temporal_position_encoding": True},
          "motion_module_kwargs_odd": {"num_attention_heads": 2, "num_transformer_block": 1,
                                       "temporal_position_encoding": True,
                                       "attention_block_types": ["Temporal_Self", "Global_Self"]}}
# v1 layout: every block's motion module attends over aligned 2 x 2 cells of all frames.
GRID = {"basic_block_type": "motionmodule", "motion_module_type": "VanillaGrid",
        "motion_module_kwargs": {"num_attention_heads": 2, "num_transformer_block": 1, "block_size": 2,
                                 "temporal_position_encoding": True}}
