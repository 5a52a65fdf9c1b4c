"""Detection, config inference, presets and conversions on tiny checkpoints built in each
published key layout, plus the real released layouts from the manifests (on the meta device)."""

import copy
import json
from pathlib import Path

import pytest
import torch

from easyanimate_core.checkpoints import (
    TRANSFORMER_PRESETS,
    VAE_PRESETS,
    check_motion_module_fits,
    convert_pixart_original,
    drop_training_keys,
    expand_input_channels,
    extract_motion_module,
    inspect_checkpoint,
    resolve_transformer_config,
    resolve_vae_config,
    save_state_dict,
)
from easyanimate_core.errors import CheckpointError

# Key/shape listings of the released checkpoints, shipped with the tests (no weights in them).
MANIFESTS = Path(__file__).resolve().parent / "fixtures" / "manifests"

H, DEPTH, CAPTION, PE_LEN = 16, 4, 8, 32


def linear(sd, name, out, inp, bias=True):
    sd[f"{name}.weight"] = torch.randn(out, inp)
    if bias:
        sd[f"{name}.bias"] = torch.randn(out)


def motion_module(sd, block, hidden=H, pe=True):
    p = f"transformer_blocks.{block}.attn_temporal.temporal_transformer."
    sd[p + "norm.weight"], sd[p + "norm.bias"] = torch.ones(hidden), torch.zeros(hidden)
    linear(sd, p + "proj_in", hidden, hidden)
    linear(sd, p + "proj_out", hidden, hidden)
    tb = p + "transformer_blocks.0."
    for a in range(2):
        for name in ("to_q", "to_k", "to_v"):
            linear(sd, f"{tb}attention_blocks.{a}.{name}", hidden, hidden, bias=False)
        linear(sd, f"{tb}attention_blocks.{a}.to_out.0", hidden, hidden)
        if pe:
            sd[f"{tb}attention_blocks.{a}.pos_encoder.pe"] = torch.randn(1, PE_LEN, hidden)
        sd[f"{tb}norms.{a}.weight"], sd[f"{tb}norms.{a}.bias"] = torch.ones(hidden), torch.zeros(hidden)
    linear(sd, tb + "ff.net.0.proj", 8 * hidden, hidden)
    linear(sd, tb + "ff.net.2", hidden, 4 * hidden)
    sd[tb + "ff_norm.weight"], sd[tb + "ff_norm.bias"] = torch.ones(hidden), torch.zeros(hidden)


def dit(in_channels=4, motion=True, skips=0, clip=False, hidden=H, depth=DEPTH):
    """A tiny PixArt / EasyAnimate transformer in the diffusers key layout."""
    sd = {
        "pos_embed.proj.weight": torch.randn(hidden, in_channels, 2, 2),
        "pos_embed.proj.bias": torch.randn(hidden),
        "scale_shift_table": torch.randn(2, hidden),
    }
    linear(sd, "proj_out", 2 * 2 * 8, hidden)
    linear(sd, "adaln_single.emb.timestep_embedder.linear_1", hidden, 256)
    linear(sd, "adaln_single.emb.timestep_embedder.linear_2", hidden, hidden)
    linear(sd, "adaln_single.linear", 6 * hidden, hidden)
    linear(sd, "caption_projection.linear_1", hidden, CAPTION)
    linear(sd, "caption_projection.linear_2", hidden, hidden)
    for i in range(depth):
        b = f"transformer_blocks.{i}."
        sd[b + "scale_shift_table"] = torch.randn(6, hidden)
        for attn in ("attn1", "attn2"):
            for name in ("to_q", "to_k", "to_v", "to_out.0"):
                linear(sd, f"{b}{attn}.{name}", hidden, hidden)
        linear(sd, b + "ff.net.0.proj", 4 * hidden, hidden)
        linear(sd, b + "ff.net.2", hidden, 4 * hidden)
        if motion:
            motion_module(sd, i, hidden)
    for i in range(skips):
        linear(sd, f"long_connect_fc.{i}", hidden, hidden)
    if clip:
        linear(sd, "clip_projection.linear_1", 8 * hidden, 12)
        linear(sd, "clip_projection.linear_2", 8 * hidden, 8 * hidden)
    return sd


def pixart_original(hidden=H, depth=2):
    """The original PixArt .pth layout with fused qkv / kv."""
    sd = {
        "x_embedder.proj.weight": torch.randn(hidden, 4, 2, 2),
        "x_embedder.proj.bias": torch.randn(hidden),
        "pos_embed": torch.randn(1, 64, hidden),
        "y_embedder.y_embedding": torch.randn(120, CAPTION),
        "final_layer.scale_shift_table": torch.randn(2, hidden),
    }
    linear(sd, "t_embedder.mlp.0", hidden, 256)
    linear(sd, "t_embedder.mlp.2", hidden, hidden)
    linear(sd, "t_block.1", 6 * hidden, hidden)
    linear(sd, "y_embedder.y_proj.fc1", hidden, CAPTION)
    linear(sd, "y_embedder.y_proj.fc2", hidden, hidden)
    linear(sd, "final_layer.linear", 32, hidden)
    for i in range(depth):
        b = f"blocks.{i}."
        sd[b + "scale_shift_table"] = torch.randn(6, hidden)
        linear(sd, b + "attn.qkv", 3 * hidden, hidden)
        linear(sd, b + "attn.proj", hidden, hidden)
        linear(sd, b + "cross_attn.q_linear", hidden, hidden)
        linear(sd, b + "cross_attn.kv_linear", 2 * hidden, hidden)
        linear(sd, b + "cross_attn.proj", hidden, hidden)
        linear(sd, b + "mlp.fc1", 4 * hidden, hidden)
        linear(sd, b + "mlp.fc2", hidden, 4 * hidden)
    return sd


def video_vae(ch=8, ch_mult=(1, 2), layers=2, latent=4):
    """A tiny EasyAnimate video VAE (slice / MagViT keys), with Lightning training keys."""
    sd = {}

    def conv(name, out, inp, k=3):
        sd[f"{name}.weight"] = torch.randn(out, inp, k, k, k)
        sd[f"{name}.bias"] = torch.randn(out)

    def res(prefix, inp, out):
        for norm, c in (("norm1", inp), ("norm2", out)):
            sd[f"{prefix}.{norm}.weight"], sd[f"{prefix}.{norm}.bias"] = torch.ones(c), torch.zeros(c)
        conv(prefix + ".conv1", out, inp)
        conv(prefix + ".conv2", out, out)
        if inp != out:
            conv(prefix + ".shortcut", out, inp, 1)

    conv("encoder.conv_in", ch, 3)
    channels = ch
    for i, mult in enumerate(ch_mult):
        for j in range(layers):
            res(f"encoder.down_blocks.{i}.convs.{j}", channels, ch * mult)
            channels = ch * mult
        if i < len(ch_mult) - 1:
            conv(f"encoder.down_blocks.{i}.downsampler.conv", channels, channels)
    res("encoder.mid_block.convs.0", channels, channels)
    conv("encoder.conv_out", 2 * latent, channels)
    conv("decoder.conv_in", channels, latent)
    for i, mult in enumerate(reversed(ch_mult)):
        for j in range(layers + 1):
            res(f"decoder.up_blocks.{i}.convs.{j}", channels, ch * mult)
            channels = ch * mult
    conv("decoder.conv_out", 3, channels)
    conv("quant_conv", 2 * latent, 2 * latent, 1)
    conv("post_quant_conv", latent, latent, 1)
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    sd["loss.discriminator3d.blocks.0.weight"] = torch.randn(4, 3, 3, 3, 3)
    return sd


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "kwargs, family, version",
    [
        ({"motion": False}, "pixart", None),
        ({"motion": True}, "easyanimate_transformer", "v1"),
        ({"motion": True, "skips": 3}, "easyanimate_transformer", "v2"),
        ({"motion": True, "skips": 3, "in_channels": 12, "clip": True}, "easyanimate_transformer", "v3"),
        ({"motion": True, "skips": 3, "in_channels": 12}, "easyanimate_transformer", "v3"),
    ],
)
def test_transformer_family_version_and_config(kwargs, family, version):
    info = inspect_checkpoint(dit(**kwargs))
    assert (info.family, info.version) == (family, version)
    c = info.config
    assert (c["hidden_size"], c["depth"], c["in_channels"], c["out_channels"], c["caption_channels"]) == (
        H,
        DEPTH,
        kwargs.get("in_channels", 4),
        8,
        CAPTION,
    )
    assert c["uvit"] == bool(kwargs.get("skips")) and c["clip_projection"] == kwargs.get("clip", False)
    assert c["motion_module"] == kwargs["motion"]
    assert any("not visible in weights" in note for note in info.notes)
    if kwargs["motion"]:
        assert len(info.dropped_keys) == 2 * DEPTH and c["temporal_position_encoding_max_len"] == PE_LEN
    if kwargs.get("clip"):
        assert (c["clip_channels"], c["clip_tokens"]) == (12, 8)


def test_detection_reads_no_values():
    meta = {
        k: torch.empty(v.shape, device="meta") for k, v in dit(skips=2, in_channels=12, clip=True).items()
    }
    info = inspect_checkpoint(meta)
    assert (info.family, info.version, info.config["hidden_size"]) == ("easyanimate_transformer", "v3", H)


def test_motion_module_file_and_extraction():
    full = dit(skips=2)
    motion = extract_motion_module(full)
    assert motion and all("attn_temporal" in k for k in motion)
    assert len(motion) == 28 * DEPTH  # 26 parameters + 2 PE buffers per block, as in the v1 mm file
    info = inspect_checkpoint(motion)
    assert (info.family, info.version) == ("motion_module", "v1")
    assert (info.config["hidden_size"], info.config["depth"]) == (H, DEPTH)
    assert any("pos_encoder.pe" in note for note in info.notes)
    with pytest.raises(CheckpointError, match="no motion-module keys"):
        extract_motion_module(dit(motion=False))


def test_motion_module_fit_errors():
    motion = extract_motion_module(dit())
    assert check_motion_module_fits(motion, H, DEPTH)["hidden_size"] == H
    with pytest.raises(
        CheckpointError, match=f"motion module for hidden size {H} cannot go into a DiT of hidden size 24"
    ):
        check_motion_module_fits(motion, 24, DEPTH)
    with pytest.raises(CheckpointError, match=f"{DEPTH} blocks cannot go into a DiT with 28 blocks"):
        check_motion_module_fits(motion, H, 28)


def test_mixed_motion_module_in_transformer_is_a_shape_error():
    sd = dit(motion=False)
    motion_module(sd, 0, hidden=2 * H)
    with pytest.raises(CheckpointError, match="motion modules in 1 of 4 blocks"):
        inspect_checkpoint(sd)
    for i in range(1, DEPTH):
        motion_module(sd, i, hidden=2 * H)
    with pytest.raises(CheckpointError, match=f"hidden size {2 * H} in a DiT of hidden size {H}"):
        inspect_checkpoint(sd)


def test_vae_detection_with_and_without_config(tmp_path):
    sd = video_vae()
    info = inspect_checkpoint(sd)
    assert (info.family, info.version) == ("video_vae", None)
    assert info.config == {
        "in_channels": 3,
        "out_channels": 3,
        "ch": 8,
        "ch_mult": [1, 2],
        "latent_channels": 4,
        "layers_per_block": 2,
        "mid_block_use_attention": False,
    }
    assert set(info.dropped_keys) == {k for k in sd if k.startswith("loss.")}
    assert any("training-only" in note for note in info.notes)
    assert inspect_checkpoint(sd, config={"slice_compression_vae": True}).family == "slice_vae"
    assert inspect_checkpoint(sd, config={"slice_compression_vae": False}).version == "v2"
    # a diffusers-style folder brings its config.json along
    folder = tmp_path / "vae"
    folder.mkdir()
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", sd)
    (folder / "config.json").write_text(json.dumps({"slice_compression_vae": True, "mini_batch_encoder": 8}))
    info = inspect_checkpoint(tmp_path, subfolder="vae")
    assert (info.family, info.version, info.config["mini_batch_encoder"]) == ("slice_vae", "v3", 8)


def test_drop_training_keys_notes_not_errors():
    sd = video_vae()
    kept, dropped = drop_training_keys(sd)
    assert dropped == [
        "loss.logvar",
        "loss.discriminator.main.0.weight",
        "loss.discriminator3d.blocks.0.weight",
    ]
    assert not any(k.startswith("loss.") for k in kept) and "quant_conv.weight" in kept
    kept, dropped = drop_training_keys(dit())
    assert len(dropped) == 2 * DEPTH and all(k.endswith("pos_encoder.pe") for k in dropped)


# ----------------------------------------------------------------------------- PixArt original


def test_pixart_original_conversion_splits_qkv_in_order():
    original = pixart_original()
    assert inspect_checkpoint(original).family == "pixart_original"
    converted = convert_pixart_original(original)
    qkv = original["blocks.1.attn.qkv.weight"]
    assert torch.equal(converted["transformer_blocks.1.attn1.to_q.weight"], qkv[:H])
    assert torch.equal(converted["transformer_blocks.1.attn1.to_k.weight"], qkv[H : 2 * H])
    assert torch.equal(
        converted["transformer_blocks.1.attn1.to_v.bias"], original["blocks.1.attn.qkv.bias"][2 * H :]
    )
    kv = original["blocks.0.cross_attn.kv_linear.weight"]
    assert torch.equal(converted["transformer_blocks.0.attn2.to_k.weight"], kv[:H])
    assert torch.equal(converted["transformer_blocks.0.attn2.to_v.weight"], kv[H:])
    assert torch.equal(
        converted["transformer_blocks.0.attn2.to_q.weight"], original["blocks.0.cross_attn.q_linear.weight"]
    )
    assert torch.equal(converted["scale_shift_table"], original["final_layer.scale_shift_table"])
    assert torch.equal(converted["adaln_single.linear.weight"], original["t_block.1.weight"])
    assert "pos_embed" not in converted and not any("y_embedding" in k for k in converted)
    # the converted dict has exactly the diffusers key set of a PixArt transformer of that size
    assert set(converted) == set(dit(motion=False, depth=2))
    info = inspect_checkpoint(original)
    assert (info.config["hidden_size"], info.config["depth"]) == (H, 2)
    assert any("y_embedding" in note for note in info.notes)


def test_pixart_original_unknown_and_bad_keys():
    sd = pixart_original()
    sd["blocks.0.attn.q_norm.weight"] = torch.ones(H)
    with pytest.raises(CheckpointError, match="does not know.*q_norm"):
        convert_pixart_original(sd)
    sd = pixart_original()
    sd["blocks.0.attn.qkv.weight"] = torch.randn(3 * H + 1, H)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        convert_pixart_original(sd)


# ----------------------------------------------------------------------------- presets


def test_transformer_resolution_from_weights_presets_and_overrides():
    v3 = dit(in_channels=12, skips=3, clip=True)
    resolved = resolve_transformer_config(v3)
    assert resolved["basic_block_type"] == "global_motionmodule"
    assert resolved["motion_module_kwargs_odd"]["attention_block_types"] == ["Temporal_Self", "Global_Self"]
    assert (resolved["in_channels"], resolved["num_layers"], resolved["caption_channels"]) == (
        12,
        DEPTH,
        CAPTION,
    )
    assert resolved["num_attention_heads"] * resolved["attention_head_dim"] == H and resolved["enable_uvit"]
    v1 = resolve_transformer_config(dit())
    assert (v1["motion_module_type"], v1["motion_module_kwargs"]["block_size"], v1["enable_uvit"]) == (
        "VanillaGrid",
        2,
        False,
    )
    # a plain PixArt base defaults to v1; an explicit preset is honoured, weights still fix shapes
    assert resolve_transformer_config(dit(motion=False))["motion_module_type"] == "VanillaGrid"
    forced = resolve_transformer_config(dit(motion=False), preset="v3")
    assert forced["basic_block_type"] == "global_motionmodule" and forced["in_channels"] == 4
    over = resolve_transformer_config(
        v3, overrides={"num_attention_heads": 2, "attention_head_dim": 8, "sample_size": 96}
    )
    assert (over["num_attention_heads"], over["attention_head_dim"], over["sample_size"]) == (2, 8, 96)
    # the presets do not alias each other
    over["motion_module_kwargs_odd"]["num_attention_heads"] = 99
    assert TRANSFORMER_PRESETS["v3"]["motion_module_kwargs_odd"]["num_attention_heads"] == 16


def test_transformer_resolution_with_config_json():
    config = copy.deepcopy(TRANSFORMER_PRESETS["v2"])
    config.update(
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=DEPTH,
        caption_channels=CAPTION,
        cross_attention_dim=H,
    )
    del config["basic_block_type"]  # a config.json without the yaml kwargs: the preset fills them in
    del config["enable_uvit"]  # ... and the weights fix what they show
    assert resolve_transformer_config(dit(skips=3), config=config)["enable_uvit"] is True
    assert resolve_transformer_config(dit(), config=config, preset="v2")["enable_uvit"] is False
    resolved = resolve_transformer_config(dit(skips=3), config=config)
    assert (resolved["num_attention_heads"], resolved["basic_block_type"]) == (2, "motionmodule")
    # 4-channel weights into a 12-channel config are expanded by the loader, not an error
    resolve_transformer_config(dit(skips=3), config={**config, "in_channels": 12})
    with pytest.raises(CheckpointError, match="num_layers is 28 in the config but the weights have 4"):
        resolve_transformer_config(dit(skips=3), config={**config, "num_layers": 28})
    with pytest.raises(CheckpointError, match="hidden size 16"):
        resolve_transformer_config(dit(), overrides={"num_attention_heads": 3, "attention_head_dim": 5})
    with pytest.raises(CheckpointError, match="unknown transformer preset 'v9'"):
        resolve_transformer_config(dit(), preset="v9")


def test_vae_resolution():
    sd = video_vae(ch=8, ch_mult=(1, 2), layers=2)
    resolved = resolve_vae_config(sd, preset="v3")
    assert (
        resolved["ch"],
        resolved["ch_mult"],
        resolved["slice_compression_vae"],
        resolved["mini_batch_encoder"],
    ) == (8, [1, 2], True, 8)
    assert resolved["down_block_types"] == ["SpatialDownBlock3D", "SpatialTemporalDownBlock3D"]
    assert resolve_vae_config(sd, config={"slice_compression_vae": False})["mini_batch_decoder"] == 3
    assert resolve_vae_config(sd, preset="v2", overrides={"scaling_factor": 0.5})["scaling_factor"] == 0.5
    with pytest.raises(CheckpointError, match="preset='v3'"):
        resolve_vae_config(sd)
    with pytest.raises(CheckpointError, match="ch is 128 in the config but the weights have 8"):
        resolve_vae_config(sd, config={"ch": 128, "slice_compression_vae": True})


def test_expand_input_channels_like_the_reference():
    sd = dit()
    widened = expand_input_channels(sd, 12)["pos_embed.proj.weight"]
    assert widened.shape == (H, 12, 2, 2)
    assert torch.equal(widened[:, :4], sd["pos_embed.proj.weight"]) and not widened[:, 4:].any()
    assert expand_input_channels(sd, 4) is sd
    with pytest.raises(CheckpointError, match="more than the model's 4"):
        expand_input_channels(dit(in_channels=12), 4)


# ----------------------------------------------------------------------------- error paths


def test_unknown_layout_names_what_was_found():
    with pytest.raises(CheckpointError, match="unknown key layout.*foo.weight"):
        inspect_checkpoint({"foo.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="AnimateDiff"):
        inspect_checkpoint(
            {"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": torch.zeros(2)}
        )


def test_missing_required_keys():
    sd = dit()
    del sd["proj_out.weight"]
    with pytest.raises(CheckpointError, match="missing required keys.*proj_out.weight"):
        inspect_checkpoint(sd)
    sd = dit()
    for key in [k for k in sd if k.startswith("transformer_blocks.2.")]:
        del sd[key]
    with pytest.raises(CheckpointError, match=r"missing required keys: transformer_blocks \[2\]"):
        inspect_checkpoint(sd)
    motion = extract_motion_module(dit())
    del motion["transformer_blocks.1.attn_temporal.temporal_transformer.proj_out.weight"]
    with pytest.raises(CheckpointError, match="missing required keys of a motion module"):
        inspect_checkpoint(motion)
    vae = video_vae()
    del vae["post_quant_conv.weight"]
    with pytest.raises(CheckpointError, match="post_quant_conv.weight"):
        inspect_checkpoint(vae)


def test_shape_mismatch():
    sd = dit()
    sd["transformer_blocks.3.attn1.to_k.weight"] = torch.randn(H, H + 1)
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch: transformer_blocks.3.attn1.to_k.weight is \[16, 17\], expected \[16, 16\]",
    ):
        inspect_checkpoint(sd)
    vae = video_vae()
    vae["quant_conv.weight"] = torch.randn(4, 4, 1, 1, 1)
    with pytest.raises(CheckpointError, match="shape mismatch: quant_conv.weight"):
        inspect_checkpoint(vae)


# ----------------------------------------------------------------------------- released layouts


def manifest_state_dict(name):
    data = json.loads((MANIFESTS / f"{name}.json").read_text())
    return {t["name"]: torch.empty(t["shape"], device="meta") for t in data["tensors"]}, data


@pytest.mark.parametrize(
    "name, family, version, in_channels, uvit, clip",
    [
        ("pixart_xl_2_512_transformer", "pixart", None, 4, False, False),
        ("easyanimate_v1_transformer", "easyanimate_transformer", "v1", 4, False, False),
        ("easyanimate_v2_transformer", "easyanimate_transformer", "v2", 4, True, False),
        ("easyanimate_v3_inp_transformer", "easyanimate_transformer", "v3", 12, True, True),
    ],
)
def test_released_transformer_layouts(name, family, version, in_channels, uvit, clip):
    sd, data = manifest_state_dict(name)
    info = inspect_checkpoint(sd)
    assert (info.family, info.version) == (family, version)
    c = info.config
    assert (c["hidden_size"], c["depth"], c["in_channels"], c["out_channels"], c["caption_channels"]) == (
        1152,
        28,
        in_channels,
        8,
        4096,
    )
    assert (c["uvit"], c["clip_projection"], c["uvit_skips"]) == (uvit, clip, 13 if uvit else 0)
    assert c["motion_module"] == (family == "easyanimate_transformer")
    # the resolved config equals the released config (base config.json + shipped yaml kwargs)
    shipped = {}
    for section in data["config"].values():
        shipped.update(section)
    resolved = resolve_transformer_config(sd)
    assert {k: resolved[k] for k in shipped} == shipped
    if version:
        assert {k: TRANSFORMER_PRESETS[version][k] for k in shipped} == shipped


def test_released_motion_module_and_vae_layouts():
    sd, _ = manifest_state_dict("easyanimate_v1_motion_module")
    info = inspect_checkpoint(sd)
    assert (info.family, info.version, info.config["hidden_size"], info.config["depth"]) == (
        "motion_module",
        "v1",
        1152,
        28,
    )
    assert len(info.dropped_keys) == 56
    sd, data = manifest_state_dict("easyanimate_v3_slice_vae")
    info = inspect_checkpoint(sd)
    assert info.family == "video_vae" and info.config["ch_mult"] == [1, 2, 4, 4]
    shipped = data["config"]["constructor kwargs"]
    assert VAE_PRESETS["v3"] == shipped
    assert resolve_vae_config(sd, config={"slice_compression_vae": True}) == shipped
    assert {k: v for k, v in VAE_PRESETS["v2"].items() if "slice" not in k and "mini_batch" not in k} == {
        k: v for k, v in shipped.items() if "slice" not in k and "mini_batch" not in k
    }


def test_sd_vae_and_additional_conditions():
    sd = {}
    for i, channels in enumerate((8, 16)):
        for j in range(2):
            sd[f"encoder.down_blocks.{i}.resnets.{j}.conv2.weight"] = torch.randn(channels, channels, 3, 3)
    for key, shape in {
        "encoder.conv_in.weight": (8, 3, 3, 3),
        "encoder.conv_out.weight": (8, 16, 3, 3),
        "decoder.conv_in.weight": (16, 4, 3, 3),
        "decoder.conv_out.weight": (3, 8, 3, 3),
        "quant_conv.weight": (8, 8, 1, 1),
        "post_quant_conv.weight": (4, 4, 1, 1),
    }.items():
        sd[key] = torch.randn(shape)
    info = inspect_checkpoint(sd)
    assert (info.family, info.version, info.config["block_out_channels"]) == ("sd_vae", "v1", [8, 16])
    with pytest.raises(CheckpointError, match="2D encoder.conv_in"):
        resolve_vae_config(sd, preset="v3")
    # PixArt at sample_size 128 has resolution / aspect-ratio embedders, which fix sample_size
    big = dit(motion=False)
    linear(big, "adaln_single.emb.resolution_embedder.linear_1", H, 256)
    assert resolve_transformer_config(big)["sample_size"] == 128
    assert resolve_transformer_config(dit(motion=False))["sample_size"] == 64


def test_vae_with_one_layer_per_block_loads_with_its_own_config(tmp_path):
    """With layers_per_block=1 the mid block has no attention whatever the flag says, so the
    flag cannot be read from the weights and must not be reported as contradicting config.json."""
    import json

    from easyanimate_core.checkpoints import save_state_dict
    from easyanimate_core.models.vae import VideoVAE, load_vae

    vae = VideoVAE.from_config(dict(ch=8, ch_mult=[1, 2, 2, 2], layers_per_block=1, norm_num_groups=4,
                                    mid_block_use_attention=True))
    save_state_dict(tmp_path / "diffusion_pytorch_model.safetensors", vae.state_dict())
    (tmp_path / "config.json").write_text(json.dumps(vae.config))
    assert load_vae(tmp_path).config["layers_per_block"] == 1


def test_vae_config_block_types_given_as_the_reference_tuple_string_pass_through():
    """Released vae/config.json files store block types as one tuple string; resolution must
    leave them for the VAE to parse instead of cutting the string to the weights' depth."""
    from easyanimate_core.checkpoints import resolve_vae_config
    from easyanimate_core.models.vae import VideoVAE

    vae = VideoVAE.from_config(dict(ch=8, ch_mult=[1, 2, 2], layers_per_block=1, norm_num_groups=4))
    down = '("SpatialDownBlock3D", "SpatialTemporalDownBlock3D", "SpatialTemporalDownBlock3D")'
    resolved = resolve_vae_config(vae.state_dict(), config={"down_block_types": down, "slice_compression_vae": True,
                                                                 "norm_num_groups": 4})
    assert resolved["down_block_types"] == down
    assert resolved["up_block_types"] == ["SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"]
    assert VideoVAE.from_config(resolved).config["down_block_types"] == list(eval(down))  # noqa: S307 (test data)
