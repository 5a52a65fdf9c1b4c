"""VAE nodes with ComfyUI absent: load from the models folder, encode IMAGE -> LATENT, decode back."""

import json

import pytest
import torch
from safetensors.torch import save_file

from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.models.vae import VideoVAE

CONFIG = {"ch": 8, "ch_mult": [1, 2, 2, 2], "norm_num_groups": 4, "slice_compression_vae": True,
          "mini_batch_encoder": 8, "mini_batch_decoder": 2, "scaling_factor": 0.25}


@pytest.fixture
def nodes(pack):
    return pack.nodes.vae_nodes


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    torch.manual_seed(0)
    vae = VideoVAE(CONFIG)
    folder = tmp_path / "EasyAnimateV3-tiny" / "vae"
    folder.mkdir(parents=True)
    weights = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    # a loose file takes the v3 preset's 32 norm groups: give it 32-channel levels
    loose = VideoVAE({**CONFIG, "ch": 32, "ch_mult": [1, 1, 1, 1], "norm_num_groups": 32})
    save_file({k: v.contiguous() for k, v in loose.state_dict().items()}, tmp_path / "loose_vae.safetensors")
    monkeypatch.setenv("VDIT_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_node_definitions(nodes, models_dir):
    for node in (nodes.VDiT_LoadSliceVAE, nodes.VDiT_VAEEncode, nodes.VDiT_VAEDecode):
        inputs = node.INPUT_TYPES()["required"]
        assert all(options[1].get("tooltip") for options in inputs.values())
        assert node.CATEGORY == "VideoDiT/vae" and node.DESCRIPTION
    names = nodes.VDiT_LoadSliceVAE.INPUT_TYPES()["required"]["vae_name"][0]
    assert "EasyAnimateV3-tiny/vae" in names and "loose_vae.safetensors" in names
    assert nodes.VDiT_LoadSliceVAE.RETURN_TYPES == ("VDIT_VAE",)
    assert "8" in nodes.VDiT_VAEEncode.INPUT_TYPES()["required"]["pixels"][1]["tooltip"]


def test_load_encode_decode_round_trip(nodes, models_dir):
    (vae,) = nodes.VDiT_LoadSliceVAE().load("EasyAnimateV3-tiny/vae", "fp32", tile_size=0)
    assert isinstance(vae, VideoVAE) and vae.tiling is None
    pixels = torch.rand(19, 20, 26, 3)  # 19 frames -> 17 kept; 20x26 -> 16x24 centre crop
    (latent,) = nodes.VDiT_VAEEncode().encode(vae, pixels)
    samples = latent["samples"]
    assert samples.shape == (1, 4, 5, 2, 3) and samples.device == torch.device("cpu")
    video = pixels[:17, 2:18, 1:25].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        expected = vae.encode(video).mean * 0.25  # SCALED by the VAE's scaling_factor
    assert torch.allclose(samples, expected, atol=1e-6)
    for seam in ("none", "blend", "smooth"):
        (images,) = nodes.VDiT_VAEDecode().decode(vae, latent, seam=seam, seed=1)
        assert images.shape == (17, 16, 24, 3) and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        raw = vae.decode(samples / 0.25)
    (images,) = nodes.VDiT_VAEDecode().decode(vae, latent, seam="none")
    assert torch.allclose(images, (raw[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1), atol=1e-6)


def test_image_latents_and_options(nodes, models_dir):
    (vae,) = nodes.VDiT_LoadSliceVAE().load("loose_vae.safetensors", "fp16 (compute in fp32)", "v3 slice VAE",
                                           mini_batch_encoder=8, mini_batch_decoder=2, tile_size=32,
                                           tile_overlap=16)
    assert vae.quant_conv.weight.dtype == torch.float16 and vae.dtype == torch.float32
    assert vae.tiling.size == 32 and vae.slice_mode
    (images,) = nodes.VDiT_VAEDecode().decode(vae, {"samples": torch.randn(3, 4, 2, 2)}, seam="none")
    assert images.shape == (3, 16, 16, 3)  # three image latents -> three frames


def test_progress_and_interruption_reach_the_slice_loop(nodes, models_dir, monkeypatch):
    (vae,) = nodes.VDiT_LoadSliceVAE().load("EasyAnimateV3-tiny/vae", "fp32")
    calls = []

    class Stop(Exception):
        pass

    def progress(total):
        def report(done, total, preview=None):
            calls.append((done, total))
            if done == 2:
                raise Stop()
        return report

    monkeypatch.setattr(nodes.host, "progress", progress)
    with pytest.raises(Stop):
        nodes.VDiT_VAEDecode().decode(vae, {"samples": torch.randn(1, 4, 6, 2, 2)}, seam="none")
    assert calls == [(1, 3), (2, 3)]


def test_node_errors(nodes, models_dir):
    (vae,) = nodes.VDiT_LoadSliceVAE().load("EasyAnimateV3-tiny/vae", "fp32")
    with pytest.raises(InputError, match="IMAGE batch"):
        nodes.VDiT_VAEEncode().encode(vae, torch.rand(8, 3, 16, 16, 3))
    with pytest.raises(InputError, match="8x8"):
        nodes.VDiT_VAEEncode().encode(vae, torch.rand(8, 4, 4, 3))
    with pytest.raises(InputError, match="LATENT"):
        nodes.VDiT_VAEDecode().decode(vae, {"samples": torch.randn(1, 16, 2, 2, 2)})
    with pytest.raises(InputError, match="VDIT_VAE"):
        nodes.VDiT_VAEDecode().decode("not a vae", {"samples": torch.randn(1, 4, 2, 2, 2)})
    with pytest.raises(CheckpointError, match="preset"):
        nodes.VDiT_LoadSliceVAE().load("loose_vae.safetensors", "fp32")
    with pytest.raises(InputError, match="multiples of 8"):
        nodes.VDiT_LoadSliceVAE().load("EasyAnimateV3-tiny/vae", "fp32", tile_size=36)


def test_blend_on_a_v2_vae_is_the_published_smoothing(nodes, models_dir):
    (v2,) = nodes.VDiT_LoadSliceVAE().load("loose_vae.safetensors", "fp32", "v2 MagViT VAE")
    assert not v2.slice_mode
    latent = {"samples": torch.randn(1, 4, 6, 2, 2)}
    (blend,) = nodes.VDiT_VAEDecode().decode(v2, latent, seam="blend", seed=5)
    (smooth,) = nodes.VDiT_VAEDecode().decode(v2, latent, seam="smooth", seed=5)
    assert blend.shape == (18, 16, 16, 3) and torch.equal(blend, smooth)
