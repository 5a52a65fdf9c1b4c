"""load_transformer: released folder layout, single files, PixArt base + standalone motion module,
pos_encoder.pe buffers accepted and ignored, strictness and clear errors."""

import json

import pytest
import torch
from tiny_dit import tiny_pixart

from easyanimate_core import CheckpointError, load_transformer
from easyanimate_core.checkpoints import save_state_dict
from easyanimate_core.models.embeddings import frame_pos_embed
from easyanimate_core.models.transformer import VideoTransformer

BASE = tiny_pixart(num_layers=4)
V1 = {"basic_block_type": "motionmodule", "motion_module_type": "VanillaGrid", "enable_uvit": False,
          "motion_module_kwargs": {"num_attention_heads": 2, "num_transformer_block": 1, "block_size": 2,
                                    "temporal_position_encoding": True,
                                    "attention_block_types": ["Temporal_Self", "Temporal_Self"]}}


def _random_model(config):
    model = VideoTransformer.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # zero-initialised parts become non-zero
    return model


def _released_state(model):
    """The model's tensors plus the pe buffers the released files carry (max_len 4096)."""
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if name.endswith(("attention_blocks.0", "attention_blocks.1")):
            state[name + ".pos_encoder.pe"] = frame_pos_embed(model.hidden_size, 4096, "cpu", torch.float32)[None]
    return state


def _inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 4, 3, 8, 8, generator=g), torch.tensor([250]), torch.randn(1, 5, 32, generator=g)


def test_released_folder_and_single_file_load_identically(tmp_path):
    model = _random_model({**BASE, **V1})
    folder = tmp_path / "EasyAnimate" / "transformer"
    folder.mkdir(parents=True)
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", _released_state(model))
    (folder / "config.json").write_text(json.dumps({**BASE, **V1}))
    x, t, enc = _inputs()
    with torch.no_grad():
        expected = model(x, t, enc)
        for path in (folder, folder.parent):
            loaded = load_transformer(path)
            assert loaded.load_report["initialised"] == []
            assert torch.equal(loaded(x, t, enc), expected)
    single = tmp_path / "full.safetensors"
    save_state_dict(single, _released_state(model))
    with torch.no_grad():
        assert torch.equal(load_transformer(single, config=dict(V1, num_attention_heads=2, sample_size=16))(x, t, enc), expected)


def test_pixart_base_plus_standalone_motion_module(tmp_path):
    video = _random_model({**BASE, **V1})
    state = _released_state(video)
    base_file, mm_file = tmp_path / "pixart.safetensors", tmp_path / "mm.safetensors"
    save_state_dict(base_file, {k: v for k, v in state.items() if "temporal" not in k})
    save_state_dict(mm_file, {k: v for k, v in state.items() if "temporal" in k})
    overrides = dict(V1, num_attention_heads=2, sample_size=16)
    x, t, enc = _inputs()
    with torch.no_grad():
        expected = video(x, t, enc)
        composed = load_transformer(base_file, motion_module=mm_file, config=overrides)
        assert torch.allclose(composed(x, t, enc), expected, atol=1e-5)
        # The same base alone is the image model, with no motion modules at all.
        image = load_transformer(base_file, config={"num_attention_heads": 2, "sample_size": 16})
        assert not image.has_motion_modules
        # With a video preset but no motion weights, the motion modules start as exact identities.
        fresh = load_transformer(base_file, config=overrides)
        assert len(fresh.load_report["initialised"]) == 4
        video_no_motion = VideoTransformer.from_config({**BASE}).eval()
        video_no_motion.load_state_dict({k: v for k, v in video.state_dict().items() if "temporal" not in k})
        assert torch.allclose(fresh(x, t, enc), video_no_motion(x, t, enc), atol=1e-6)


def test_unexpected_and_misshaped_keys_are_errors(tmp_path):
    model = _random_model({**BASE, **V1})
    state = _released_state(model)
    bad = tmp_path / "extra.safetensors"
    save_state_dict(bad, {**state, "something_else.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="keys this model does not have"):
        load_transformer(bad, config=dict(V1, num_attention_heads=2, sample_size=16))
    # A motion module present in block 0 only: truncated file.
    partial = tmp_path / "partial.safetensors"
    save_state_dict(partial, {k: v for k, v in state.items() if not k.endswith("attn_temporal.temporal_transformer.proj_in.weight")
                              or k.startswith("transformer_blocks.0.")})
    with pytest.raises(CheckpointError, match="missing required keys"):
        load_transformer(partial, config=dict(V1, num_attention_heads=2, sample_size=16))
    missing = tmp_path / "missing.safetensors"
    save_state_dict(missing, {k: v for k, v in state.items() if k != "transformer_blocks.1.attn2.to_q.weight"})
    with pytest.raises(CheckpointError, match="missing"):
        load_transformer(missing, config=dict(V1, num_attention_heads=2, sample_size=16))
