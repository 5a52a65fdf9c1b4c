"""nodes/host.py with ComfyUI present, played by small stand-ins for the ComfyUI modules it uses.

The stand-ins copy only the call signatures host.py relies on (checked against the real thing in
tests/test_comfyui_real_host.py when COMFYUI_DIR is set); these tests always run."""

import enum
import importlib
import sys
import types
from typing import ClassVar

import pytest
import torch


class _Interrupted(Exception):
    pass


class _ProgressBar:
    calls: ClassVar[list] = []

    def __init__(self, total, node_id=None):
        self.total = total

    def update_absolute(self, value, total=None, preview=None):
        _ProgressBar.calls.append((value, total, preview))


class _PreviewMethod(enum.Enum):
    NoPreviews = "none"
    Latent2RGB = "latent2rgb"


@pytest.fixture
def comfy(monkeypatch):
    """Install stand-ins for comfy.utils / comfy.cli_args / comfy.model_management."""
    _ProgressBar.calls = []
    state = types.SimpleNamespace(interrupted=False)

    def throw_if_interrupted():
        if state.interrupted:
            raise _Interrupted()

    modules = {
        "comfy.utils": types.SimpleNamespace(ProgressBar=_ProgressBar),
        "comfy.cli_args": types.SimpleNamespace(
            args=types.SimpleNamespace(preview_method=_PreviewMethod.NoPreviews, preview_size=512),
            LatentPreviewMethod=_PreviewMethod),
        "comfy.model_management": types.SimpleNamespace(
            throw_exception_if_processing_interrupted=throw_if_interrupted,
            get_torch_device=lambda: torch.device("meta"),
            unet_offload_device=lambda: torch.device("cpu"),
            intermediate_device=lambda: torch.device("cpu")),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    state.args = modules["comfy.cli_args"].args
    return state


@pytest.fixture
def host(pack):
    return importlib.import_module(pack.__name__ + ".nodes.host")


def test_progress_drives_the_comfy_bar_without_previews_by_default(host, comfy):
    report = host.progress(2)
    report(1, 2, preview=torch.zeros(1, 4, 2, 8, 8))
    report(2, 2)
    assert _ProgressBar.calls == [(1, 2, None), (2, 2, None)]


def test_progress_sends_jpeg_previews_when_enabled(host, comfy):
    comfy.args.preview_method = _PreviewMethod.Latent2RGB
    comfy.args.preview_size = 256
    assert host.previews_enabled()
    host.progress(4)(1, 4, preview=torch.zeros(1, 4, 3, 6, 10))
    (value, total, (fmt, image, size)), = _ProgressBar.calls
    assert (value, total, fmt, size, image.size) == (1, 4, "JPEG", 256, (10, 6))


def test_cancel_raises_from_progress_and_check_interrupt(host, comfy):
    report = host.progress(3)
    report(1, 3)
    comfy.interrupted = True
    with pytest.raises(_Interrupted):
        report(2, 3)
    with pytest.raises(_Interrupted):
        host.check_interrupt()
    assert len(_ProgressBar.calls) == 1


def test_devices_come_from_the_memory_manager(host, comfy):
    assert host.torch_device() == torch.device("meta")
    assert host.offload_device() == torch.device("cpu")


SHIPPED_MODEL = ["vdit_default/motion_lora/pan_left.safetensors", "vdit_default/motion_module.safetensors",
    "vdit_default/pixart_base", "vdit_default/text_encoder", "vdit_default/transformer", "vdit_default/vae"]


def test_model_folder_registration_keeps_yaml_paths_and_adds_extensions(host, tmp_path, monkeypatch):
    yaml_dir, models_dir = tmp_path / "yaml_ea", tmp_path / "models"
    folders = {"easyanimate": ([str(yaml_dir)], set())}     # as extra_model_paths.yaml leaves it

    def add_model_folder_path(name, path, is_default=False):
        paths = folders.setdefault(name, ([], set()))[0]
        if path not in paths:
            paths.append(path)

    fake = types.SimpleNamespace(
        models_dir=str(models_dir), folder_names_and_paths=folders, map_legacy=lambda name: name,
        supported_pt_extensions={".safetensors", ".pt"}, add_model_folder_path=add_model_folder_path,
        get_folder_paths=lambda name: list(folders[name][0]))
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    entry = folders["easyanimate"]
    host._register_model_folder()
    assert folders["easyanimate"] is entry
    assert entry == ([str(yaml_dir), str(models_dir / "easyanimate"), host.PACK_MODELS], {".safetensors", ".pt"})

    (yaml_dir / "v3" / "vae").mkdir(parents=True)
    (yaml_dir / "v3" / "vae" / "config.json").write_text("{}")
    (yaml_dir / "mm.safetensors").write_bytes(b"x")
    (yaml_dir / "readme.md").write_text("not a model")
    assert host.model_files() == ["mm.safetensors", "v3/vae", *SHIPPED_MODEL]  # + the embedded default model
    assert host.model_path("v3/vae") == str(yaml_dir / "v3" / "vae")
    with pytest.raises(ValueError, match="put it in ComfyUI/models/easyanimate"):
        host.model_path("absent.safetensors")
