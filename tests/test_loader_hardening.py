"""Hostile and broken files meet one clear line, before any model is built: NaN / inf weights
(DiT, motion module, LoRA, VAE, T5, CLIP), config.json fields of the wrong type, pickles that are
not weights-only (their code never runs), and a loose DiT file that needs its config."""

import json
import os
import pickle
import shutil

import pytest
import torch
from tiny_models import save_model_folder

from easyanimate_core.checkpoints import LoraPair, load_state_dict, lora_state_dict, save_state_dict
from easyanimate_core.errors import CheckpointError, EasyAnimateError, InputError
from easyanimate_core.models.clip_vision import ClipImageEncoder
from easyanimate_core.models.lora import linear_layers, load_lora
from easyanimate_core.models.motion_module import load_motion_module
from easyanimate_core.models.text_encoder import TextEncoder
from easyanimate_core.models.transformer import VideoTransformer, load_transformer
from easyanimate_core.models.vae import load_vae


class WritesMarker:
    """Unpickling this runs ``touch <path>``: the file must never appear."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class CustomObject:
    pass


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_model_folder(tmp_path_factory.mktemp("hardening"), in_channels=12)


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and text.endswith("."), text
    return text


def _poison(folder, file_name, value=float("nan")):
    """Put ``value`` into the first floating-point tensor of ``folder/file_name``; returns its name."""
    file = folder / file_name
    tensors = load_state_dict(file)
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = value
    save_state_dict(file, tensors)
    return name


def _copy(models, part, tmp_path):
    target = tmp_path / part
    shutil.copytree(models / part, target)
    return target


def test_non_finite_weights_are_refused_naming_the_file(models, tmp_path):
    dit = _copy(models, "transformer", tmp_path)
    name = _poison(dit, "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_transformer(dit)
    assert f"transformer holds NaN or infinite values (in {name}" in _one_line(error)

    full = load_transformer(models / "transformer")
    motion = {k: v.clone() for k, v in full.state_dict().items() if ".attn_temporal." in k}
    next(iter(motion.values())).view(-1)[0] = float("inf")
    mm = tmp_path / "mm.safetensors"
    save_state_dict(mm, motion)
    with pytest.raises(CheckpointError, match=r"mm\.safetensors holds NaN or infinite values") as error:
        load_motion_module(mm)
    _one_line(error)
    with pytest.raises(CheckpointError, match=r"mm\.safetensors holds NaN"):
        load_transformer(models / "transformer", motion_module=mm)

    layers = linear_layers(full)
    target = "transformer_blocks.0.attn1.to_q"
    nan = torch.full((2, layers[target].in_features), float("nan"))
    lora = tmp_path / "nan_lora.safetensors"
    save_state_dict(lora, lora_state_dict({target: LoraPair(nan, torch.full((layers[target].out_features, 2),
                                                                                  float("nan")), 1.0)}, "kohya"))
    with pytest.raises(CheckpointError, match=r"nan_lora\.safetensors holds NaN or infinite values") as error:
        load_lora(lora, layers)
    _one_line(error)

    vae = _copy(models, "vae", tmp_path)
    _poison(vae, "diffusion_pytorch_model.safetensors", float("-inf"))
    with pytest.raises(CheckpointError, match="vae holds NaN or infinite values") as error:
        load_vae(vae)
    _one_line(error)

    text = _copy(models, "text_encoder", tmp_path)
    _poison(text, "model.safetensors")
    with pytest.raises(CheckpointError, match="text_encoder holds NaN or infinite values") as error:
        TextEncoder.load(text, tokenizer_path=models / "tokenizer")
    _one_line(error)

    clip = _copy(models, "image_encoder", tmp_path)
    _poison(clip, "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors holds NaN or infinite values") as error:
        ClipImageEncoder.load(str(clip))
    _one_line(error)


def test_finite_check_is_exact_for_every_float_dtype():
    from easyanimate_core.checkpoints import check_finite

    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        large = torch.full((4, 1024), 400.0).to(dtype)  # a sum would overflow fp16 / fp8; the values are fine
        check_finite({"w": large, "empty": torch.zeros(0, dtype=dtype), "steps": torch.arange(3)})
        for position in (0, 2000, -1):
            broken = large.float()
            broken.view(-1)[position] = float("nan")
            with pytest.raises(CheckpointError, match=r"\(in w\)"):
                check_finite({"w": broken.to(dtype)})
    with pytest.raises(CheckpointError, match=r"\(in a and 1 more tensors\)"):
        check_finite({"a": torch.tensor([float("inf")]), "b": torch.tensor([-float("inf")]), "c": torch.ones(2)})


@pytest.mark.parametrize("field, value, expected", [
    ("num_attention_heads", "three", "a whole number >= 1"),
    ("norm_eps", "abc", "a number > 0.0"),
    ("num_layers", 0, "a whole number >= 1"),
    ("attention_bias", "yes", "true or false"),
])
def test_config_fields_of_the_wrong_type_are_one_line(models, tmp_path, field, value, expected):
    dit = _copy(models, "transformer", tmp_path)
    config = json.loads((dit / "config.json").read_text())
    (dit / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(InputError) as error:
        load_transformer(dit)
    assert f"field {field} is {value!r} but must be {expected}" in _one_line(error)
    with pytest.raises(InputError, match=f"field {field} is"):
        VideoTransformer.from_config({**config, field: value})


def test_motion_config_fields_of_the_wrong_type_are_one_line(models):
    config = json.loads((models / "transformer" / "config.json").read_text())
    config["motion_module_kwargs_odd"] = {**config["motion_module_kwargs_odd"], "num_attention_heads": "eight"}
    with pytest.raises(InputError) as error:
        VideoTransformer.from_config(config)
    assert "motion module config field num_attention_heads is 'eight'" in _one_line(error)
    config["motion_module_kwargs_odd"]["num_attention_heads"] = 2
    config["motion_module_kwargs_even"] = {**config["motion_module_kwargs_even"], "attention_block_types": "Temporal_Self"}
    with pytest.raises(InputError, match="must be a list") as error:
        VideoTransformer.from_config(config)
    _one_line(error)


def test_hostile_pickles_never_run_and_are_named(models, tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(marker)))  # the payload works: unpickling it runs the command
    assert marker.exists()
    marker.unlink()
    state = load_state_dict(models / "transformer")
    evil = tmp_path / "dit.pt"
    torch.save({**state, "extra": WritesMarker(marker)}, evil)
    with pytest.raises(CheckpointError) as error:
        load_transformer(evil)
    assert "is a pickle that is not weights-only (it contains posix.system)" in _one_line(error)
    legacy = tmp_path / "legacy.pt"  # the pre-zip format cannot be memory-mapped: read the other way
    torch.save({"w": torch.zeros(2), "x": WritesMarker(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not weights-only"):
        load_state_dict(legacy)
    custom = tmp_path / "custom.pt"
    torch.save({"w": torch.zeros(2), "x": CustomObject()}, custom)
    with pytest.raises(CheckpointError, match=r"not weights-only \(it contains [\w.]*CustomObject\)") as error:
        load_state_dict(custom)
    _one_line(error)

    clip = _copy(models, "image_encoder", tmp_path)
    weights = load_state_dict(clip / "model.safetensors")
    (clip / "model.safetensors").unlink()
    torch.save({**weights, "x": WritesMarker(marker)}, clip / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin is a pickle that is not weights-only") as error:
        ClipImageEncoder.load(str(clip))
    _one_line(error)

    text = _copy(models, "text_encoder", tmp_path)
    weights = load_state_dict(text / "model.safetensors")
    (text / "model.safetensors").unlink()
    torch.save({**weights, "x": WritesMarker(marker)}, text / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not weights-only") as error:
        TextEncoder.load(text, tokenizer_path=models / "tokenizer")
    _one_line(error)
    assert not marker.exists()


def test_truncated_pickle_is_still_reported_as_truncated(models, tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(load_state_dict(models / "vae"), whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt is truncated or corrupt"):
        load_state_dict(cut)


def test_loose_dit_without_config_asks_for_one(models, tmp_path):
    # hybrid modules with one attention in even blocks: no preset has that layout
    config = json.loads((models / "transformer" / "config.json").read_text())
    config["motion_module_kwargs_even"]["attention_block_types"] = ["Temporal_Self"]
    torch.manual_seed(0)
    model = VideoTransformer.from_config(config)
    loose = tmp_path / "my_dit.safetensors"
    save_state_dict(loose, model.state_dict())
    with pytest.raises(CheckpointError) as error:
        load_transformer(loose)
    text = _one_line(error)
    assert "my_dit.safetensors comes without a motion-module config" in text and "truncated" not in text
    loaded = load_transformer(loose, config={k: v for k, v in config.items() if k.startswith(("motion", "basic"))})
    assert loaded.has_motion_modules
    # a file that carries its config in its metadata needs nothing
    save_state_dict(loose, model.state_dict(), metadata={"config": json.dumps(config)})
    assert load_transformer(loose).config["motion_module_kwargs_even"]["attention_block_types"] == ["Temporal_Self"]


def test_unknown_preset_is_refused_before_reading(tmp_path):
    with pytest.raises(InputError, match="unknown transformer preset 'v9'; expected one of auto, v1, v2, v3"):
        load_transformer(tmp_path / "absent", config="v9")
    with pytest.raises(EasyAnimateError, match="unknown motion-module preset 'v9'"):
        load_motion_module(tmp_path / "absent", preset="v9")
