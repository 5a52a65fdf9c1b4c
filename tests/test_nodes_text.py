"""Text and CLIP-vision nodes with ComfyUI absent: the pack's T5 loader + encode on a tiny T5 in the
release layout, the native-CLIP encode on a stand-in with ComfyUI's CLIP interface, the CLIP image
encoder loader, and their error paths."""

import pytest
import torch
from tiny_models import save_clip
from tiny_text import write_tiny_text_encoder

from easyanimate_core.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_text_encoder(root / "tiny")
    save_clip(root / "tiny" / "image_encoder")
    return root


@pytest.fixture
def text(pack, models_root, monkeypatch):
    monkeypatch.setenv("VDIT_MODELS_DIR", str(models_root))
    return pack.nodes.text_nodes


def test_t5_loader_lists_and_loads_the_release_folder(text):
    assert "tiny/text_encoder" in text.VDiT_LoadT5.INPUT_TYPES()["required"]["t5_name"][0]
    t5 = text.VDiT_LoadT5().load("tiny/text_encoder", "fp32")[0]
    assert t5.dtype == torch.float32


def test_t5_encode_pads_to_120_tokens_with_a_mask(text):
    t5 = text.VDiT_LoadT5().load("tiny/text_encoder")[0]
    (embeds, extras), = text.VDiT_T5Encode().encode(t5, "a cat sits on the mat")[0]
    mask = extras["attention_mask"]
    assert embeds.shape == (1, 120, 32) and mask.shape == (1, 120)
    real = int(mask.sum())
    assert 2 < real < 20 and mask[0, :real].all() and not mask[0, real:].any()
    (_, empty_extras), = text.VDiT_T5Encode().encode(t5, "")[0]
    assert int(empty_extras["attention_mask"].sum()) == 1  # EOS only: the reference's negative
    # clean=True lower-cases as the reference does; off feeds the prompt verbatim
    upper = text.VDiT_T5Encode().encode(t5, "A CAT SITS ON THE MAT")[0][0][0]
    torch.testing.assert_close(upper, embeds)
    verbatim = text.VDiT_T5Encode().encode(t5, "A CAT SITS ON THE MAT", False)[0][0][0]
    assert not torch.allclose(verbatim, embeds)


def test_a_lone_t5_file_uses_the_tokenizer_comfyui_ships(text, models_root, tmp_path, monkeypatch):
    """A single t5xxl file with no tokenizer beside it takes comfy/text_encoders/t5_tokenizer of the
    running ComfyUI (a stand-in `comfy` package here); headless it is one CheckpointError."""
    import shutil
    import sys
    import types

    loose = models_root / "loose"
    loose.mkdir(exist_ok=True)
    shutil.copy(models_root / "tiny" / "text_encoder" / "model.safetensors", loose / "t5_tiny.safetensors")
    assert "loose/t5_tiny.safetensors" in text.VDiT_LoadT5.INPUT_TYPES()["required"]["t5_name"][0]
    with pytest.raises(CheckpointError, match="no T5 tokenizer"):
        text.VDiT_LoadT5().load("loose/t5_tiny.safetensors")

    comfy = types.ModuleType("comfy")
    comfy.__path__ = [str(tmp_path / "comfy")]
    shutil.copytree(models_root / "tiny" / "tokenizer", tmp_path / "comfy" / "text_encoders" / "t5_tokenizer")
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    assert text.host.comfy_t5_tokenizer() == str(tmp_path / "comfy" / "text_encoders" / "t5_tokenizer")
    single = text.VDiT_LoadT5().load("loose/t5_tiny.safetensors", "fp32")[0]
    folder = text.VDiT_LoadT5().load("tiny/text_encoder", "fp32")[0]
    torch.testing.assert_close(text.VDiT_T5Encode().encode(single, "a cat sits on the mat")[0],
                               text.VDiT_T5Encode().encode(folder, "a cat sits on the mat")[0])
    comfy.__path__ = [str(tmp_path / "elsewhere")]  # a ComfyUI without the bundled tokenizer
    assert text.host.comfy_t5_tokenizer() is None


def test_t5_loader_errors(text):
    with pytest.raises(CheckpointError, match="was not found"):
        text.VDiT_LoadT5().load("missing/text_encoder")
    with pytest.raises(InputError, match="dtype"):
        text.VDiT_LoadT5().load("tiny/text_encoder", "int8")
    with pytest.raises(InputError, match="VDIT_T5"):
        text.VDiT_T5Encode().encode(object(), "a cat")


class StandInClip:
    """ComfyUI's CLIP interface as the native pixart T5 behaves: no padding, real tokens + EOS."""

    def __init__(self):
        self.texts = []

    def tokenize(self, text):
        self.texts.append(text)
        return {"t5xxl": [[(len(word), 1.0) for word in text.split()] + [(1, 1.0)]]}

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        n = len(tokens["t5xxl"][0])
        return {"cond": torch.arange(n * 8, dtype=torch.float32).view(1, n, 8) + 1, "pooled_output": None}


def test_native_clip_encode_pads_and_masks(text):
    clip = StandInClip()
    (embeds, extras), = text.VDiT_TextEncode().encode(clip, "A Red Car", True)[0]
    assert clip.texts == ["a red car"]
    assert embeds.shape == (1, 120, 8)
    assert extras["attention_mask"][0, :4].all() and not extras["attention_mask"][0, 4:].any()
    assert embeds[0, 4:].abs().sum() == 0
    (long_embeds, long_extras), = text.VDiT_TextEncode().encode(clip, "word " * 200, False)[0]
    assert long_embeds.shape == (1, 120, 8) and long_extras["attention_mask"].all()  # truncated to 120


def test_cut_prompts_are_logged_every_time_by_both_encoders(text, caplog):
    """Python shows a warning once per place; the nodes log each cut prompt."""
    t5 = text.VDiT_LoadT5().load("tiny/text_encoder")[0]
    long = " ".join(["a cat sits on the mat in the sun"] * 30)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            text.VDiT_T5Encode().encode(t5, long)
            text.VDiT_TextEncode().encode(StandInClip(), long)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("120 T5 tokens" in m for m in messages) == 2
    assert sum("120" in m and "T5 tokens" not in m for m in messages) == 2, messages


def test_native_clip_encode_rejects_other_inputs(text):
    with pytest.raises(InputError, match="native CLIP"):
        text.VDiT_TextEncode().encode(object(), "a cat")


def test_text_conditioning_drives_the_sampler(pack, text):
    """The T5 node's output is what the sampler reads (120 tokens + mask, 32-d tiny T5)."""
    from tiny_models import build_dit, build_vae

    from easyanimate_core.models.handle import ModelHandle

    t5 = text.VDiT_LoadT5().load("tiny/text_encoder")[0]
    positive = text.VDiT_T5Encode().encode(t5, "a dog runs through the park")[0]
    negative = text.VDiT_T5Encode().encode(t5, "")[0]
    sampling = pack.nodes.sampling_nodes
    latent = sampling.VDiT_EmptyLatentVideo().generate(build_vae(), 32, 32, 9, 1)[0]
    out = sampling.VDiT_Sampler().sample(ModelHandle(build_dit(4)), positive, negative, latent, 1, 2, 6.0, "euler", "normal",
                                         1.0)[0]
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()


def test_clip_vision_loader(pack, models_root, monkeypatch):
    monkeypatch.setenv("VDIT_MODELS_DIR", str(models_root))
    nodes = pack.nodes.clip_vision_nodes
    assert "tiny/image_encoder" in nodes.VDiT_LoadCLIPVision.INPUT_TYPES()["required"]["clip_name"][0]
    encoder = nodes.VDiT_LoadCLIPVision().load("tiny/image_encoder")[0]
    assert encoder.encode(torch.rand(1, 3, 40, 48)).shape == (1, 768)
    with pytest.raises(CheckpointError):
        nodes.VDiT_LoadCLIPVision().load("tiny/tokenizer")  # no config.json
    with pytest.raises(InputError, match="dtype"):
        nodes.VDiT_LoadCLIPVision().load("tiny/image_encoder", "int4")
