"""Each loader's dropdown lists only what that loader can load (detected from config.json and key
names, cached per file change), with ComfyUI absent."""

import json
import shutil

import pytest
import torch
from tiny_models import save_model_folder

from easyanimate_core.checkpoints import LoraPair, detect, load_state_dict, lora_state_dict, save_state_dict
from easyanimate_core.checkpoints.split import split_motion_module
from easyanimate_core.models.lora import linear_layers
from easyanimate_core.models.transformer import load_transformer


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    """A models/easyanimate folder with one of everything, and a models/text_encoders one."""
    root = tmp_path_factory.mktemp("shelf")
    easy, text = root / "easyanimate", root / "text_encoders"
    release = save_model_folder(easy / "release", in_channels=12)
    split_motion_module(release / "transformer", easy / "image_dit", easy / "mm.safetensors")
    layers = linear_layers(load_transformer(release / "transformer"))

    def lora(name, targets, layout="kohya"):
        pairs = {t: LoraPair(torch.randn(2, layers[t].in_features), torch.randn(layers[t].out_features, 2), 1.0)
                 for t in targets}
        save_state_dict(easy / name, lora_state_dict(pairs, layout))

    motion_q = "transformer_blocks.0.attn_temporal.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q"
    lora("style.safetensors", ["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"])
    lora("camera.safetensors", [motion_q], "motion_lora")
    lora("adapter.safetensors", ["transformer_blocks.0.attn1.to_v", "transformer_blocks.1.attn2.to_q"], "peft")
    (easy / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    (easy / "notes.safetensors").write_bytes(b"not weights")
    text.mkdir()
    t5 = load_state_dict(release / "text_encoder" / "model.safetensors")
    save_state_dict(text / "t5xxl_tiny.safetensors", t5)
    save_state_dict(text / "clip_l.safetensors", {"text_model.final_layer_norm.weight": torch.ones(4),
                                                   "text_model.embeddings.token_embedding.weight": torch.ones(8, 4)})
    return root


@pytest.fixture
def nodes(pack, shelf, monkeypatch):
    monkeypatch.setenv("VDIT_MODELS_DIR", str(shelf / "easyanimate"))
    return pack.nodes


def _choices(node, name):
    return node.INPUT_TYPES()["required"][name][0]


def test_each_loader_lists_only_what_it_loads(nodes, shelf, monkeypatch):
    dit = nodes.dit_nodes
    assert _choices(dit.VDiT_LoadDiT, "dit_name") == ["image_dit", "release/transformer"]
    assert _choices(dit.VDiT_LoadMotionModule, "motion_name") == ["mm.safetensors", "release/transformer"]
    assert _choices(nodes.vae_nodes.VDiT_LoadSliceVAE, "vae_name") == ["release/vae"]
    assert _choices(nodes.clip_vision_nodes.VDiT_LoadCLIPVision, "clip_name") == ["release/image_encoder"]
    assert _choices(dit.VDiT_LoadLoRA, "lora_name") == ["adapter.safetensors", "camera.safetensors",
                                                         "style.safetensors"]
    assert _choices(dit.VDiT_LoadMotionLoRA, "lora_name") == ["camera.safetensors"]
    assert _choices(dit.VDiT_LoadDomainAdapter, "adapter_name") == ["adapter.safetensors"]
    # T5: the text_encoder folder of the release, and from text_encoders only the T5 file (not CLIP-L)
    monkeypatch.setenv("VDIT_MODELS_DIR", str(shelf / "text_encoders"))
    assert _choices(nodes.text_nodes.VDiT_LoadT5, "t5_name") == ["t5xxl_tiny.safetensors"]
    monkeypatch.setenv("VDIT_MODELS_DIR", str(shelf / "easyanimate"))
    assert _choices(nodes.text_nodes.VDiT_LoadT5, "t5_name") == ["release/text_encoder"]


def test_detection_reads_only_headers_and_is_cached_per_change(shelf, monkeypatch, caplog):
    import easyanimate_core.checkpoints.io as io

    easy = shelf / "easyanimate"
    reads = []
    real = io.load_state_dict

    def counting(path, *args, **kwargs):
        reads.append((str(path), kwargs.get("device")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(io, "load_state_dict", counting)
    moved = easy / "moving.safetensors"
    broken = easy / "broken.safetensors"
    try:  # the shelf is shared by the module: take the added files away even when an assert fails
        shutil.copy(easy / "camera.safetensors", moved)
        assert detect.loadable_as(moved) == {detect.LORA, detect.MOTION_LORA}
        assert reads == [(str(moved), "meta")]  # names and shapes only
        assert detect.loadable_as(moved) == {detect.LORA, detect.MOTION_LORA}
        assert len(reads) == 1  # cached
        shutil.copy(easy / "mm.safetensors", moved)  # replaced: new size / mtime
        assert detect.loadable_as(moved) == {detect.MOTION_MODULE}
        assert len(reads) == 2
        broken.write_bytes((easy / "mm.safetensors").read_bytes()[:200])
        with caplog.at_level("WARNING"):
            assert detect.loadable_as(broken) == frozenset()
            assert detect.loadable_as(broken) == frozenset()
        assert caplog.text.count("broken.safetensors is not listed by any loader") == 1  # once per change
    finally:
        moved.unlink(missing_ok=True)
        broken.unlink(missing_ok=True)


def test_a_folder_is_redetected_when_its_config_changes(shelf, tmp_path):
    folder = tmp_path / "image_encoder"
    shutil.copytree(shelf / "easyanimate" / "release" / "image_encoder", folder)
    assert detect.loadable_as(folder) == {detect.CLIP_VISION}
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "clip"}) + "\n")  # a full CLIP
    assert detect.loadable_as(folder) == frozenset()
