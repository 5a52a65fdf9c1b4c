"""nodes/host.py with ComfyUI absent: every service falls back to plain torch / tqdm behaviour."""

import importlib
import os
import sys

import pytest
import torch


@pytest.fixture
def host(pack, monkeypatch):
    monkeypatch.delenv("VDIT_MODELS_DIR", raising=False)
    return importlib.import_module(pack.__name__ + ".nodes.host")


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    root = tmp_path / "models_ea"
    _touch(root / "a.safetensors")
    _touch(root / "sub" / "b.pt")
    _touch(root / "notes.txt")                                   # not a weight file
    _touch(root / ".cache" / "hidden.safetensors")               # hidden folders are skipped
    _touch(root / "EasyAnimateV3" / "model_index.json")
    _touch(root / "EasyAnimateV3" / "transformer" / "config.json")
    _touch(root / "EasyAnimateV3" / "transformer" / "diffusion_pytorch_model.safetensors")
    _touch(root / "EasyAnimateV3" / "vae" / "diffusion_pytorch_model.bin")   # folder without config.json
    _touch(root / "EasyAnimateV3" / "text_encoder" / "config.json")
    _touch(root / "EasyAnimateV3" / "text_encoder" / "model-00001-of-00002.safetensors")
    monkeypatch.setenv("VDIT_MODELS_DIR", str(root))
    return root


def test_model_files_lists_weight_files_and_model_folders(host, models_dir):
    assert host.model_files() == [
        "EasyAnimateV3/text_encoder",
        "EasyAnimateV3/transformer",
        "EasyAnimateV3/vae",
        "a.safetensors",
        "sub/b.pt",
    ]


def test_model_files_searches_every_folder_in_the_env_var(host, models_dir, tmp_path, monkeypatch):
    other = tmp_path / "more"
    _touch(other / "c.sft")
    monkeypatch.setenv("VDIT_MODELS_DIR", f"{models_dir}{os.pathsep}{other}")
    assert "c.sft" in host.model_files() and "a.safetensors" in host.model_files()


def test_without_env_var_the_folder_is_models_key_under_the_working_dir(host, tmp_path, monkeypatch):
    _touch(tmp_path / "models" / "easyanimate" / "d.pth")
    _touch(tmp_path / "models" / "loras" / "e.safetensors")
    monkeypatch.chdir(tmp_path)
    assert host.model_files() == ["d.pth"]
    assert host.model_files("loras") == ["e.safetensors"]
    assert host.model_path("e.safetensors", "loras") == str(tmp_path / "models" / "loras" / "e.safetensors")


def test_missing_folder_lists_nothing(host, tmp_path, monkeypatch):
    monkeypatch.setenv("VDIT_MODELS_DIR", str(tmp_path / "does_not_exist"))
    assert host.model_files() == []


def test_model_path_resolves_files_and_folders(host, models_dir):
    assert host.model_path("sub/b.pt") == str(models_dir / "sub" / "b.pt")
    assert host.model_path("EasyAnimateV3/transformer") == str(models_dir / "EasyAnimateV3" / "transformer")


def test_model_path_missing_file_is_one_clear_sentence(host, pack, models_dir):
    errors = importlib.import_module(pack.__name__ + ".easyanimate_core.errors")
    with pytest.raises(errors.CheckpointError) as info:
        host.model_path("missing.safetensors")
    message = str(info.value)
    assert "missing.safetensors" in message and str(models_dir) in message and "VDIT_MODELS_DIR" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["", "../outside.safetensors", "/etc/passwd"])
def test_model_path_never_leaves_the_model_folders(host, pack, models_dir, name):
    _touch(models_dir.parent / "outside.safetensors")
    errors = importlib.import_module(pack.__name__ + ".easyanimate_core.errors")
    with pytest.raises(errors.CheckpointError):
        host.model_path(name)


def test_devices_fall_back_to_torch(host):
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert host.torch_device() == expected
    assert host.offload_device() == torch.device("cpu")
    assert host.intermediate_device() == torch.device("cpu")


def test_progress_is_a_tqdm_bar_that_ignores_previews(host, capsys):
    report = host.progress(3)
    for done in range(1, 4):
        report(done, 3, preview=torch.zeros(1, 4, 2, 8, 8))
    err = capsys.readouterr().err
    assert "3/3" in err and "VideoDiT" in err


def test_interrupt_and_previews_are_off(host):
    assert host.check_interrupt() is None
    assert host.previews_enabled() is False


def test_latent_preview_projects_the_middle_frame(host):
    latents = torch.zeros(2, 4, 3, 5, 6)
    latents[0, 0, 1] = 1.0                      # only the middle frame of the first video is lit
    image = host.latent_preview(latents)
    assert image.mode == "RGB" and image.size == (6, 5)
    # channel 0 -> (0.3512, 0.2297, 0.3227); pixel = (value + 1) * 127.5
    assert image.getpixel((0, 0)) == tuple(int((1 + f) * 127.5) for f in (0.3512, 0.2297, 0.3227))
    assert host.latent_preview(latents[:, :, 0]).getpixel((0, 0)) == (127, 127, 127)   # 4-D input


@pytest.mark.parametrize("bad", [None, torch.zeros(1, 16, 2, 4, 4), torch.zeros(4, 4), "latent"])
def test_latent_preview_declines_what_it_cannot_project(host, bad):
    assert host.latent_preview(bad) is None


def test_load_and_release_move_modules_between_devices(host, monkeypatch):
    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr(host, "torch_device", lambda: torch.device("meta"))
    host.load_models([module])
    assert module.weight.is_meta
    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr(host, "offload_device", lambda: torch.device("meta"))
    host.release_models([module])
    assert module.weight.is_meta
    assert not any(key.startswith("_vdit") for key in vars(module))     # no host bookkeeping headless


def test_host_never_imports_comfyui(host, models_dir, tmp_path, monkeypatch):
    # A ComfyUI on sys.path must stay untouched until ComfyUI itself has loaded it.
    fake = tmp_path / "fake_comfyui"
    for name in ("comfy/__init__.py", "folder_paths.py", "latent_preview.py"):
        _touch(fake / name, b"raise ImportError('nodes/host.py imported ComfyUI')\n")
    monkeypatch.syspath_prepend(str(fake))
    importlib.reload(host)
    host.model_files(), host.torch_device(), host.check_interrupt(), host.previews_enabled()
    host.progress(1)(1, 1), host.load_models([torch.nn.Linear(1, 1)])
    assert not {"comfy", "folder_paths", "latent_preview"} & set(sys.modules)
