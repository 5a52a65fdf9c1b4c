"""Reading and atomically writing weights, and every file-level error path."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from easyanimate_core.checkpoints import inspect_checkpoint, load_config, load_state_dict, save_state_dict
from easyanimate_core.checkpoints import io as ckpt_io
from easyanimate_core.errors import CheckpointError, InputError


def small():
    return {
        "a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,
        "b.bias": torch.arange(5, dtype=torch.float16),
    }


def assert_same(left, right):
    assert set(left) == set(right)
    for key in left:
        assert left[key].dtype == right[key].dtype and torch.equal(left[key], right[key])


def test_safetensors_round_trip_with_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict(path, small(), metadata={"format": "pt", "note": "x"})
    assert_same(load_state_dict(path), small())
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "note": "x"}
    meta = load_state_dict(path, device="meta")
    assert (
        meta["a.weight"].is_meta
        and meta["a.weight"].shape == (3, 4)
        and meta["b.bias"].dtype == torch.float16
    )
    sft = tmp_path / "w.sft"
    sft.write_bytes(path.read_bytes())
    assert_same(load_state_dict(sft), load_state_dict(path))


def test_save_handles_views_and_shared_storage(tmp_path):
    fused = torch.randn(6, 4)
    q, k, v = fused.chunk(3)  # contiguous views into one storage, like a split qkv
    tensors = {"q": q, "k": k, "v": v, "t": fused.t(), "tied": fused, "tied2": fused}
    save_state_dict(tmp_path / "v.safetensors", tensors)
    loaded = load_state_dict(tmp_path / "v.safetensors")
    for key, tensor in tensors.items():
        assert torch.equal(loaded[key], tensor)
    assert os.path.getsize(tmp_path / "v.safetensors") < 4 * 6 * 4 * 6 + 2048  # views saved at their own size


def test_atomic_save_keeps_previous_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_state_dict(path, small())
    before = path.read_bytes()
    import safetensors.torch

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict(path, {"x": torch.zeros(100)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temp file left behind


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(InputError, match="metadata"):
        save_state_dict(tmp_path / "m.safetensors", small(), metadata={"epoch": 3})
    with pytest.raises(InputError, match="does not exist"):
        save_state_dict(tmp_path / "nope" / "m.safetensors", small())
    with pytest.raises(InputError, match="meta device"):
        save_state_dict(tmp_path / "m.safetensors", {"x": torch.empty(2, device="meta")})
    assert not list(tmp_path.iterdir())


def test_weights_only_pickles_and_wrappers(tmp_path):
    torch.save({"state_dict": small(), "epoch": 3}, tmp_path / "lightning.ckpt")
    assert_same(load_state_dict(tmp_path / "lightning.ckpt"), small())
    torch.save({"module": small()}, tmp_path / "deepspeed.pt")
    assert_same(load_state_dict(tmp_path / "deepspeed.pt"), small())
    torch.save(small(), tmp_path / "plain.pth")
    assert load_state_dict(tmp_path / "plain.pth", device="meta")["a.weight"].is_meta
    torch.save({"state_dict": {"a": torch.zeros(1), "step": 4}}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="mixed.pt maps 'step' to a int, expected only tensors"):
        load_state_dict(tmp_path / "mixed.pt")


class NotAWeight:
    """A custom class inside a pickle: exactly what weights-only loading must refuse."""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_non_weights_only_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"a": torch.zeros(2), "obj": NotAWeight()}, path)
    with pytest.raises(CheckpointError) as error:
        load_state_dict(path)
    message = str(error.value)
    assert "evil.pt is a pickle that is not weights-only" in message and "NotAWeight" in message
    assert "\n" not in message
    legacy = tmp_path / "legacy.bin"
    with open(legacy, "wb") as handle:
        pickle.dump({"a": NotAWeight()}, handle)
    with pytest.raises(CheckpointError, match="legacy.bin is a pickle that is not weights-only"):
        load_state_dict(legacy)


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_state_dict(good, {"x": torch.randn(64, 64)})
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    for device in ("cpu", "meta"):
        with pytest.raises(CheckpointError, match="cut.safetensors is truncated or corrupt: it is truncated"):
            load_state_dict(tmp_path / "cut.safetensors", device=device)
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    (tmp_path / "garbage.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"0" * 64
    )
    (tmp_path / "huge_header.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    for name in ("tiny", "garbage", "huge_header"):
        with pytest.raises(CheckpointError, match=f"{name}.safetensors is truncated or corrupt"):
            inspect_checkpoint(tmp_path / f"{name}.safetensors")
    torch.save(small(), tmp_path / "ok.pt")
    pt = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(pt[: len(pt) // 2])
    (tmp_path / "garbage.ckpt").write_bytes(b"hello garbage" * 10)
    for name in ("cut.pt", "garbage.ckpt"):
        with pytest.raises(CheckpointError, match=f"{name} is truncated or corrupt"):
            load_state_dict(tmp_path / name)


def test_folders_configs_and_missing_weights(tmp_path):
    model = tmp_path / "model"
    (model / "transformer").mkdir(parents=True)
    (model / "vae").mkdir()
    save_state_dict(model / "transformer" / "diffusion_pytorch_model.safetensors", small())
    (model / "transformer" / "config.json").write_text(json.dumps({"num_layers": 2}))
    torch.save(small(), model / "vae" / "diffusion_pytorch_model.bin")
    assert_same(load_state_dict(model, subfolder="transformer"), small())
    assert_same(load_state_dict(model / "vae"), small())
    assert load_config(model, subfolder="transformer") == {"num_layers": 2}
    assert load_config(model / "transformer" / "diffusion_pytorch_model.safetensors") == {"num_layers": 2}
    assert load_config(model / "vae") is None
    with pytest.raises(CheckpointError, match="parts transformer, vae; say which one to read"):
        load_state_dict(model)
    (model / "empty").mkdir()
    (model / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="empty holds no weights"):
        load_state_dict(model / "empty")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "missing.safetensors")
    (model / "transformer" / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_config(model / "transformer")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown extension '.onnx'"):
        load_state_dict(tmp_path / "weights.onnx")


def test_sharded_folder(tmp_path):
    save_state_dict(tmp_path / "part1.safetensors", {"a.weight": torch.ones(2)})
    save_state_dict(tmp_path / "part2.safetensors", {"b.weight": torch.zeros(3)})
    (tmp_path / ckpt_io.SHARD_INDEX_NAME).write_text(
        json.dumps({"weight_map": {"a.weight": "part1.safetensors", "b.weight": "part2.safetensors"}})
    )
    loaded = load_state_dict(tmp_path)
    assert set(loaded) == {"a.weight", "b.weight"} and torch.equal(loaded["a.weight"], torch.ones(2))


def test_inspect_command(tmp_path, capsys):
    from easyanimate_core.checkpoints.cli import main

    sd = {"transformer_blocks.0.attn_temporal.temporal_transformer.proj_in.weight": torch.zeros(2, 2)}
    save_state_dict(tmp_path / "mm.safetensors", sd)
    with pytest.raises(CheckpointError, match="missing required keys of a motion module"):
        main("inspect", [str(tmp_path / "mm.safetensors")])
    save_state_dict(
        tmp_path / "lora.safetensors",
        {
            "lora_unet__proj_out.lora_down.weight": torch.zeros(2, 4),
            "lora_unet__proj_out.lora_up.weight": torch.zeros(4, 2),
        },
    )
    assert main("inspect", [str(tmp_path / "lora.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "family:  lora_kohya" in out and "rank: 2" in out
    assert main("inspect", [str(tmp_path / "lora.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "lora_kohya"
    model = tmp_path / "model"
    for part in ("transformer", "vae"):
        (model / part).mkdir(parents=True)
        save_state_dict(
            model / part / "diffusion_pytorch_model.safetensors",
            {
                f"lora_unet__{part}.lora_down.weight": torch.zeros(3, 4),
                f"lora_unet__{part}.lora_up.weight": torch.zeros(4, 3),
            },
        )
    assert main("inspect", [str(model), "--json"]) == 0
    sources = [part["source"] for part in json.loads(capsys.readouterr().out)]
    assert [Path(s).parent.name for s in sources] == ["transformer", "vae"]
    from training.run import main as run

    assert run(["inspect", str(tmp_path / "garbage.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_reading_selected_keys_and_legacy_pickles(tmp_path):
    save_state_dict(tmp_path / "w.safetensors", small())
    torch.save(small(), tmp_path / "w.pt")
    torch.save(small(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("w.safetensors", "w.pt", "legacy.pt"):
        assert_same(load_state_dict(tmp_path / name, keys=["b.bias"]), {"b.bias": small()["b.bias"]})
        assert_same(load_state_dict(tmp_path / name), small())
