"""The user journey across the three DiT stages: train a few steps of dit-image, dit-motion and
dit-full, then reload every output through the public loaders (load_transformer, the Load DiT /
Load + Apply Motion Module nodes, inspect) and check that the reloaded model reproduces the
trained one (<= 1e-5), with no preset given anywhere: the config travels with the files."""

import copy
import json

import pytest
import torch
from train_helpers import dit_yaml, image_dit_config, make_dataset, motion_config, write_models

from easyanimate_core.models.transformer import load_transformer
from training.run import main as run

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Runs the three stages once; returns their output folders and the trained models as the
    trainer exported them (captured in memory, before anything is written)."""
    import training.train_dit as train_dit

    root = tmp_path_factory.mktemp("journey")
    models = write_models(root / "models")
    data = make_dataset(root / "data", videos=2, images=2, frames=12)
    trained = {}
    write_folder = train_dit.export_model_folder

    def capture(model, folder):
        trained[folder.parent.name] = copy.deepcopy(model).float().eval()
        write_folder(model, folder)

    mp = pytest.MonkeyPatch()
    mp.setattr(train_dit, "export_model_folder", capture)
    try:
        runs = {
            "dit-image": {"model": {"config": image_dit_config()}, "data": {"types": "image", "frames": 1}},
            "dit-motion": {"model": {"pretrained": str(root / "dit-image" / "transformer"),
                                     "motion_config": motion_config()}},
            "dit-full": {"model": {"pretrained": str(root / "dit-motion" / "transformer")}},
        }
        for command, sections in runs.items():
            cfg = dit_yaml(root / f"{command}.yaml", models, data, root / command,
                           train={"steps": 2, "ema": False, "max_grad_norm": 0.0}, **sections)
            assert run([command, "--config", cfg]) == 0
    finally:
        mp.undo()
    return root, trained


def _inputs():
    g = torch.Generator().manual_seed(11)
    return torch.randn(1, 4, 3, 4, 4, generator=g), torch.tensor([450]), torch.randn(1, 5, 32, generator=g)


def _out(model):
    with torch.no_grad():
        return model(*_inputs())


def _same(reloaded, trained):
    assert (_out(reloaded) - _out(trained)).abs().max() <= TOLERANCE


def _inspect(path, capsys):
    capsys.readouterr()
    assert run(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_stage_reloads_as_trained(stages):
    root, trained = stages
    for stage in ("dit-image", "dit-motion", "dit-full"):
        _same(load_transformer(root / stage / "transformer"), trained[stage])
    assert not load_transformer(root / "dit-image" / "transformer").has_motion_modules


def test_trained_motion_module_plugs_into_the_image_base_without_a_preset(stages):
    root, trained = stages
    mm = root / "dit-motion" / "motion_module.safetensors"
    combined = load_transformer(root / "dit-image" / "transformer", motion_module=mm)
    _same(combined, trained["dit-motion"])
    assert combined.config["basic_block_type"] == motion_config()["basic_block_type"]
    # "auto" is a preset name every loader takes, and means the same as none
    _same(load_transformer(root / "dit-image" / "transformer", motion_module=mm, config="auto"), trained["dit-motion"])


def test_nodes_reload_the_trained_stages(stages, pack, monkeypatch):
    from easyanimate_core.models.handle import ModelHandle

    root, trained = stages
    nodes = pack.nodes.dit_nodes
    monkeypatch.setenv("VDIT_MODELS_DIR", str(root))
    default = nodes.VDiT_LoadMotionModule.INPUT_TYPES()["required"]["config_preset"][1]["default"]
    assert default == "auto"
    (base,) = nodes.VDiT_LoadDiT().load("dit-image/transformer", "fp32")
    for stored in ("auto", "v1"):  # "v1": what saved workflows hold; the file's own config still wins
        (motion,) = nodes.VDiT_LoadMotionModule().load("dit-motion/motion_module.safetensors", stored)
        (video,) = nodes.VDiT_ApplyMotionModule().apply(base, motion)
        with video.patched() as model:
            _same(model, trained["dit-motion"])
    (full,) = nodes.VDiT_LoadDiT().load("dit-full/transformer", "fp32")
    assert isinstance(full, ModelHandle)
    _same(full.model, trained["dit-full"])


def test_inspect_names_the_version_the_config_describes(stages, capsys):
    root, _ = stages
    image = _inspect(root / "dit-image" / "transformer", capsys)
    assert image["version"] is None and any("without motion modules" in n for n in image["notes"])
    for stage in ("dit-motion", "dit-full"):  # hybrid motion modules, no U-ViT at two layers: still v3
        assert _inspect(root / stage / "transformer", capsys)["version"] == "v3"
    mm = _inspect(root / "dit-motion" / "motion_module.safetensors", capsys)
    assert (mm["family"], mm["version"]) == ("motion_module", "v3")
    assert mm["config"]["basic_block_type"] == "global_motionmodule"


def test_split_of_the_full_stage_reloads_as_trained(stages, tmp_path):
    root, trained = stages
    base, mm = tmp_path / "base", tmp_path / "mm.safetensors"
    assert run(["split-motion-module", str(root / "dit-full"), "--base", str(base), "--motion-module", str(mm)]) == 0
    _same(load_transformer(base, motion_module=mm), trained["dit-full"])


def test_generate_cli_takes_the_trained_motion_module_as_trained(stages, tmp_path):
    from easyanimate_core.video_io import read_video

    root, _ = stages
    models = root / "models"
    common = ["--vae", str(models / "vae"), "--text-encoder", str(models / "text_encoder"),
              "--tokenizer", str(models / "tokenizer"), "--width", "32", "--height", "32", "--frames", "9",
              "--steps", "2", "--seam", "none", "--prompt", "a square moving 0", "--seed", "5"]
    whole, split = tmp_path / "whole.mp4", tmp_path / "split.mp4"
    assert run(["generate", "--transformer", str(root / "dit-motion" / "transformer"), *common,
                "--output", str(whole)]) == 0
    assert run(["generate", "--transformer", str(root / "dit-image" / "transformer"),
                "--motion-module", str(root / "dit-motion" / "motion_module.safetensors"), *common,
                "--output", str(split)]) == 0
    a, b = (torch.as_tensor(read_video(path)[0]) for path in (whole, split))
    assert a.shape == b.shape and (a.float() - b.float()).abs().max() <= 2  # same latents up to 1e-5
