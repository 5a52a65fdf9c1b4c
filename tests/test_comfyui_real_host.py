"""nodes/host.py inside a real ComfyUI process (COMFYUI_DIR): folder registration, the bundled T5
tokenizer, devices, memory manager, progress hook, previews and Cancel, against ComfyUI's own
modules.

ComfyUI is loaded in a child process (this file run as a script), the way its test suite does
in-process checks: ``args.cpu`` set before comfy.model_management is imported, a scratch base
directory, then the pack imported by file path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from comfyui_server import child_env

pytestmark = pytest.mark.comfyui
ROOT = Path(__file__).resolve().parents[1]


def _probe(comfy_dir: str, base_dir: str) -> dict:
    import gc
    import importlib
    import importlib.util
    import weakref

    sys.path.insert(0, comfy_dir)
    from comfy.cli_args import LatentPreviewMethod, args

    args.cpu = True
    args.base_directory = base_dir
    import folder_paths

    yaml_dir = os.path.join(base_dir, "yaml_easyanimate")
    folder_paths.add_model_folder_path("easyanimate", yaml_dir)   # what extra_model_paths.yaml does
    import comfy.model_management as mm
    import comfy.model_patcher  # (loaded by ComfyUI before any custom node)
    import comfy.utils
    import torch

    name = str(ROOT).replace(".", "_x_")                          # ComfyUI's module name for a pack
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    host = importlib.import_module(name + ".nodes.host")

    out = {}
    paths, extensions = folder_paths.folder_names_and_paths["easyanimate"]
    out["paths"] = paths
    out["extensions_added"] = folder_paths.supported_pt_extensions <= extensions
    os.makedirs(os.path.join(yaml_dir, "v3", "transformer"))
    open(os.path.join(yaml_dir, "v3", "transformer", "config.json"), "w").close()
    os.makedirs(os.path.join(base_dir, "models", "easyanimate"))
    open(os.path.join(base_dir, "models", "easyanimate", "mm.safetensors"), "w").close()
    out["files"] = host.model_files()
    out["resolved"] = [host.model_path(n) for n in out["files"]]
    try:
        host.model_path("absent.safetensors")
    except Exception as error:  # noqa: BLE001
        out["missing"] = f"{type(error).__name__}: {error}"
    out["devices"] = [str(host.torch_device()), str(host.offload_device()), str(host.intermediate_device())]
    out["t5_tokenizer"] = host.comfy_t5_tokenizer()

    module = torch.nn.Linear(64, 64)
    host.load_models([module], memory_required=1024)
    patcher = module.__dict__["_vdit_host_patcher"]
    out["loaded"] = [any(m.model is patcher for m in mm.current_loaded_models),
                     patcher.loaded_size() == patcher.model_size() > 0]
    host.load_models([module])
    out["reused"] = module.__dict__["_vdit_host_patcher"] is patcher
    out["registered_once"] = sum(m.model is patcher for m in mm.current_loaded_models) == 1
    host.release_models([module])
    out["released"] = not any(m.model is patcher for m in mm.current_loaded_models)
    out["module_untouched"] = not hasattr(module, "model_lowvram")
    dead = weakref.ref(patcher)
    del module, patcher
    gc.collect()
    out["patcher_collected"] = dead() is None

    seen = []
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: seen.append([value, total, type(preview).__name__]))
    latents = torch.randn(1, 4, 3, 8, 8)
    report = host.progress(2)
    report(1, 2, latents)                                          # previews off by default
    args.preview_method = LatentPreviewMethod.Latent2RGB
    out["previews_enabled"] = host.previews_enabled()
    report(2, 2, latents)
    out["hook_calls"] = seen
    captured = []
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: captured.append(preview))
    host.progress(1)(1, 1, latents)
    fmt, image, size = captured[0]
    out["payload"] = [fmt, type(image).__name__, list(image.size), size]

    interrupted = []
    for call in (lambda: report(1, 2), host.check_interrupt):
        mm.interrupt_current_processing(True)
        try:
            call()
        except mm.InterruptProcessingException:
            interrupted.append(True)
    out["interrupted"] = interrupted
    return out


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run the real-host tests")
    base = tmp_path_factory.mktemp("comfy_base")
    result = subprocess.run([sys.executable, __file__, comfy_dir, str(base)], check=False, cwd=base,
                            env=child_env(base), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), base


def test_model_folder_is_registered_next_to_yaml_paths(probe):
    out, base = probe
    assert out["paths"] == [str(base / "yaml_easyanimate"), str(base / "models" / "easyanimate"), str(ROOT / "models")]
    assert out["extensions_added"]


def test_model_files_and_paths_use_comfy_folders(probe):
    out, base = probe
    shipped = ["vdit_default/motion_lora/pan_left.safetensors", "vdit_default/motion_module.safetensors",
    "vdit_default/pixart_base", "vdit_default/text_encoder", "vdit_default/transformer", "vdit_default/vae"]
    assert out["files"] == ["mm.safetensors", "v3/transformer", *shipped]
    assert out["resolved"] == [str(base / "models" / "easyanimate" / "mm.safetensors"),
                               str(base / "yaml_easyanimate" / "v3" / "transformer"),
                               *(str(ROOT / "models" / name) for name in shipped)]
    assert out["missing"].startswith("CheckpointError") and "ComfyUI/models/easyanimate" in out["missing"]


def test_the_bundled_t5_tokenizer_is_found(probe):
    out, _ = probe
    expected = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "text_encoders" / "t5_tokenizer"
    assert out["t5_tokenizer"] and Path(out["t5_tokenizer"]).resolve() == expected.resolve()
    assert (expected / "tokenizer.json").is_file()


def test_devices_and_memory_manager(probe):
    out, _ = probe
    assert out["devices"] == ["cpu", "cpu", "cpu"]
    assert out["loaded"] == [True, True]
    assert out["reused"] and out["registered_once"] and out["released"] and out["module_untouched"]
    assert out["patcher_collected"]


def test_progress_previews_and_cancel(probe):
    out, _ = probe
    assert out["hook_calls"] == [[1, 2, "NoneType"], [2, 2, "tuple"]]
    assert out["previews_enabled"]
    assert out["payload"] == ["JPEG", "Image", [8, 8], 512]
    assert out["interrupted"] == [True, True]


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2])))
