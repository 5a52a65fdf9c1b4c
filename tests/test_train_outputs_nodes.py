"""Trained outputs in the published layouts load through the pack's nodes (ComfyUI absent: the
host falls back to VDIT_MODELS_DIR) and behave as the trainer left them."""

import shutil

import pytest
import torch
from train_helpers import dit_yaml, image_dit_config, make_dataset, motion_config, vae_yaml, write_models


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run of every trainer kind; outputs copied into a models folder."""
    from training.train_dit import main as dit_main
    from training.train_lora import main as lora_main
    from training.train_vae import main as vae_main

    root = tmp_path_factory.mktemp("trained")
    models = write_models(root / "models")
    data = make_dataset(root / "data", videos=2, images=2)
    vae = vae_yaml(root / "vae.yaml", data, root / "vae_run", loss={"disc_start": 100}, train={"steps": 1})
    assert vae_main("vae", ["--config", vae]) == 0
    image = dit_yaml(root / "i.yaml", models, data, root / "image_run", model={"config": image_dit_config()},
                     data={"frames": 1}, train={"steps": 1})
    assert dit_main("dit-image", ["--config", image]) == 0
    motion = dit_yaml(root / "m.yaml", models, data, root / "motion_run",
                      model={"pretrained": str(root / "image_run" / "transformer"), "motion_config": motion_config()},
                      train={"steps": 2, "lr": 1e-2})
    assert dit_main("dit-motion", ["--config", motion]) == 0
    for command in ("lora", "motion-lora", "domain-adapter"):
        cfg = dit_yaml(root / f"{command}.yaml", models, data, root / f"{command}_run",
                       model={"pretrained": str(root / "motion_run" / "transformer")},
                       lora={"rank": 4, "alpha": 4.0}, train={"steps": 2, "lr": 1e-2})
        assert lora_main(command, ["--config", cfg]) == 0
    shelf = root / "shelf"
    shutil.copytree(root / "vae_run" / "vae", shelf / "my_vae")
    shutil.copytree(root / "motion_run" / "transformer", shelf / "my_video_dit")
    shutil.copytree(root / "image_run" / "transformer", shelf / "my_image_dit")
    shutil.copy(root / "motion_run" / "motion_module.safetensors", shelf / "my_mm.safetensors")
    shutil.copy(root / "lora_run" / "lora.safetensors", shelf / "my_lora.safetensors")
    shutil.copy(root / "motion-lora_run" / "motion_lora.safetensors", shelf / "my_motion_lora.safetensors")
    shutil.copy(root / "domain-adapter_run" / "domain_adapter.safetensors", shelf / "my_adapter.safetensors")
    return shelf


def _run(model_handle):
    x, t, text = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([300]), \
        torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), model_handle.patched() as model:
        return model(x, t, text)


def test_trained_outputs_load_through_the_nodes(pack, trained, monkeypatch):
    monkeypatch.setenv("VDIT_MODELS_DIR", str(trained))
    nodes = pack.nodes
    vae = nodes.vae_nodes.VDiT_LoadSliceVAE().load("my_vae")[0]
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    assert vae.decode(vae.encode(video).mode()).shape == video.shape

    dit = nodes.dit_nodes.VDiT_LoadDiT().load("my_video_dit", weight_dtype="fp32")[0]
    base = _run(dit)
    lora = nodes.dit_nodes.VDiT_LoadLoRA().apply(dit, "my_lora.safetensors", 0.7)[0]
    assert not torch.allclose(_run(lora), base, atol=1e-6)
    assert torch.allclose(_run(nodes.dit_nodes.VDiT_LoadLoRA().apply(dit, "my_lora.safetensors", 0.0)[0]), base)
    adapter = nodes.dit_nodes.VDiT_LoadDomainAdapter().apply(dit, "my_adapter.safetensors", 1.0)[0]
    assert not torch.allclose(_run(adapter), base, atol=1e-6)

    # the standalone motion module (+ the trained MotionLoRA) on the image DiT it was trained on
    image = nodes.dit_nodes.VDiT_LoadDiT().load("my_image_dit", weight_dtype="fp32")[0]
    mm = nodes.dit_nodes.VDiT_LoadMotionModule().load("my_mm.safetensors", config_preset="v3")[0]
    chain = nodes.dit_nodes.VDiT_LoadMotionLoRA().load("my_motion_lora.safetensors", 1.0)[0]
    video_dit = nodes.dit_nodes.VDiT_ApplyMotionModule().apply(image, mm, 1.0, chain)[0]
    assert _run(video_dit).shape == base.shape
