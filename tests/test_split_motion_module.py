"""`run.py split-motion-module`: a video DiT -> image base folder + standalone motion module, and the
shipped split of the default model (models/vdit_default/pixart_base + motion_module.safetensors)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from tiny_models import build_dit, save_dit

from easyanimate_core.checkpoints import load_state_dict
from easyanimate_core.errors import CheckpointError, InputError
from easyanimate_core.models.transformer import load_transformer
from training.run import main as run

DEFAULT = Path(__file__).resolve().parents[1] / "models" / "vdit_default"


def _inputs(in_channels=4, frames=3, size=8):
    g = torch.Generator().manual_seed(5)
    return (torch.randn(1, in_channels, frames, size, size, generator=g), torch.tensor([400]),
            torch.randn(1, 6, 32, generator=g))


def _metadata(file):
    with safe_open(str(file), framework="pt") as handle:
        return handle.metadata()


def test_split_rebuilds_the_video_dit_exactly(tmp_path):
    folder = save_dit(tmp_path / "video" / "transformer", in_channels=4)
    base, mm = tmp_path / "base", tmp_path / "mm.safetensors"
    assert run(["split-motion-module", str(folder.parent), "--base", str(base), "--motion-module", str(mm)]) == 0
    assert not any("attn_temporal" in k for k in load_state_dict(base))
    assert all(".attn_temporal." in k for k in load_state_dict(mm))
    base_config = json.loads((base / "config.json").read_text())
    assert "basic_block_type" not in base_config and not any(k.startswith("motion_module") for k in base_config)
    assert json.loads(_metadata(mm)["config"])["basic_block_type"] == "global_motionmodule"

    full = load_transformer(folder)
    combined = load_transformer(base, motion_module=mm)  # no preset: the config travels with the file
    image = load_transformer(base)
    assert not image.has_motion_modules and combined.has_motion_modules
    expected, got = full.state_dict(), combined.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    x, t, text = _inputs()
    with torch.no_grad():  # same weights; only the kernels' memory alignment may differ
        torch.testing.assert_close(combined(x, t, text), full(x, t, text), atol=1e-6, rtol=0)


def test_split_errors_are_one_line(tmp_path, capsys):
    model = build_dit(4)
    image_folder = tmp_path / "image"
    image_folder.mkdir()
    from easyanimate_core.checkpoints import save_state_dict

    save_state_dict(image_folder / "diffusion_pytorch_model.safetensors",
                    {k: v for k, v in model.state_dict().items() if "attn_temporal" not in k})
    config = {k: v for k, v in model.config.items() if not k.startswith(("motion_module", "basic_block"))}
    (image_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no motion-module config"):
        from easyanimate_core.checkpoints.split import split_motion_module

        split_motion_module(image_folder, tmp_path / "b", tmp_path / "m.safetensors")
    folder = save_dit(tmp_path / "video", in_channels=4)
    with pytest.raises(InputError, match=r"must end in \.safetensors"):
        split_motion_module(folder, tmp_path / "b", tmp_path / "m.pt")
    assert not (tmp_path / "b").exists()  # refused before anything was written
    weights = (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    for base, motion in ((folder, tmp_path / "m.safetensors"), (tmp_path / "b", folder / "m.safetensors")):
        with pytest.raises(InputError, match="must not overwrite the model being split"):
            split_motion_module(folder, base, motion)
    assert (folder / "diffusion_pytorch_model.safetensors").read_bytes() == weights  # the source is untouched
    capsys.readouterr()
    assert run(["split-motion-module", str(image_folder), "--base", str(tmp_path / "b"),
                "--motion-module", str(tmp_path / "m.safetensors")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no motion-module config" in err, err


def test_shipped_split_reproduces_the_shipped_dit_exactly():
    full = load_transformer(DEFAULT / "transformer")
    combined = load_transformer(DEFAULT / "pixart_base", motion_module=DEFAULT / "motion_module.safetensors")
    assert combined.config == full.config
    expected, got = full.state_dict(), combined.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    x, t, _ = _inputs(frames=4)
    text = torch.randn(1, 6, full.options["caption_channels"])
    with torch.no_grad():
        torch.testing.assert_close(combined(x, t, text), full(x, t, text), atol=1e-6, rtol=0)
    image = load_transformer(DEFAULT / "pixart_base")
    assert not image.has_motion_modules
    from easyanimate_core.checkpoints import inspect_checkpoint

    base_info, mm_info = inspect_checkpoint(DEFAULT / "pixart_base"), inspect_checkpoint(DEFAULT / "motion_module.safetensors")
    assert base_info.version is None and any("without motion modules" in note for note in base_info.notes)
    assert (mm_info.family, mm_info.version) == ("motion_module", "v3")  # hybrid modules, read from the metadata
    assert inspect_checkpoint(DEFAULT / "transformer").version == "v3"
    stored = {**load_state_dict(DEFAULT / "pixart_base"), **load_state_dict(DEFAULT / "motion_module.safetensors")}
    assert {v.dtype for v in stored.values()} == {torch.float16}  # fp16 like the rest of vdit_default
    assert len(stored) == len(load_state_dict(DEFAULT / "transformer"))  # nothing stored twice


def test_shipped_split_is_what_the_tool_makes(tmp_path):
    base, mm = tmp_path / "pixart_base", tmp_path / "motion_module.safetensors"
    assert run(["split-motion-module", str(DEFAULT / "transformer"), "--base", str(base),
                "--motion-module", str(mm)]) == 0
    for made, shipped in ((base / "diffusion_pytorch_model.safetensors",
                           DEFAULT / "pixart_base" / "diffusion_pytorch_model.safetensors"),
                          (mm, DEFAULT / "motion_module.safetensors"),
                          (base / "config.json", DEFAULT / "pixart_base" / "config.json")):
        assert made.read_bytes() == shipped.read_bytes(), shipped.name
