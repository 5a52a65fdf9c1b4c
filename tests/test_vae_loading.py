"""load_vae: released folder layouts, loose files, strict keys, dtypes."""

import json

import pytest
import torch
from safetensors.torch import save_file

from easyanimate_core import load_vae
from easyanimate_core.errors import CheckpointError
from easyanimate_core.models.vae import VideoVAE

CONFIG = {"ch": 8, "ch_mult": [1, 2, 2, 2], "norm_num_groups": 4, "slice_compression_vae": True,
          "mini_batch_encoder": 8, "mini_batch_decoder": 2, "scaling_factor": 0.5,
          # released configs store block types as one tuple string
          "down_block_types": '("SpatialDownBlock3D", "SpatialTemporalDownBlock3D", '
                              '"SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D")',
          "_class_name": "AutoencoderKLMagvit"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("EasyAnimateV3-tiny")
    torch.manual_seed(0)
    vae = VideoVAE(CONFIG).eval()
    weights = {k: v.contiguous() for k, v in vae.state_dict().items()}
    (root / "vae").mkdir()
    save_file({**weights, "loss.logvar": torch.zeros(())}, root / "vae" / "diffusion_pytorch_model.safetensors")
    (root / "vae" / "config.json").write_text(json.dumps(CONFIG))
    save_file(weights, root / "loose_vae.safetensors")
    return root, vae, weights


def _same_model(a, b):
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        return torch.allclose(a.encode(video).mean, b.encode(video).mean.float(), atol=1e-2)


def test_vae_folder_and_model_root_load_the_same_weights(saved):
    root, vae, _ = saved
    for path in (root / "vae", root):
        loaded = load_vae(path)
        assert isinstance(loaded, VideoVAE)
        assert loaded.scaling_factor == 0.5 and loaded.slice_mode and loaded.mini_batch_decoder == 2
        assert any("training-only" in note for note in loaded.load_notes)
        for k, v in vae.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)


def test_loose_file_needs_a_preset(saved):
    root, vae, _ = saved
    with pytest.raises(CheckpointError, match="preset"):
        load_vae(root / "loose_vae.safetensors")
    loaded = load_vae(root / "loose_vae.safetensors", config=CONFIG)
    assert _same_model(vae, loaded)


def test_dtype_and_upcast(saved):
    root, vae, _ = saved
    loaded = load_vae(root, dtype=torch.float16, upcast=True)
    assert loaded.quant_conv.weight.dtype == torch.float16 and loaded.dtype == torch.float32
    assert _same_model(vae, loaded)
    assert load_vae(root, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_missing_unexpected_and_misshaped_keys_are_reported(saved, tmp_path):
    _, _, weights = saved
    broken = dict(weights)
    broken.pop("decoder.conv_out.bias")
    broken["decoder.extra.weight"] = torch.zeros(1)
    broken["decoder.mid_block.attentions.0.to_q.bias"] = torch.zeros(3)
    save_file(broken, tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(CheckpointError) as error:
        load_vae(tmp_path)
    message = str(error.value)
    for part in ("1 missing: decoder.conv_out.bias", "1 unexpected: decoder.extra.weight",
                 "decoder.mid_block.attentions.0.to_q.bias (3,) vs (16,)"):
        assert part in message


def test_config_that_does_not_fit_the_weights(saved, tmp_path):
    root, _, _ = saved
    with pytest.raises(CheckpointError, match="ch_mult"):
        load_vae(root, config={**CONFIG, "ch_mult": [1, 2, 4, 4]})
