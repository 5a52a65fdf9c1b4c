"""Importing the pack stays cheap and works both ways it is imported: by file path from a
custom_nodes folder (ComfyUI) and ``easyanimate_core`` as an installed package (headless)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["transformers", "diffusers", "cv2", "scenedetect", "accelerate"]

# Imports the pack the way ComfyUI's load_custom_node does: the folder's path (dots -> "_x_") as
# the module name, its __init__.py as the spec, no sys.path entry for the pack.
BY_PATH = r"""
import importlib, importlib.util, json, sys
folder = sys.argv[1]
name = folder.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, folder + "/__init__.py")
pack = importlib.util.module_from_spec(spec)
sys.modules[name] = pack
spec.loader.exec_module(pack)
host = importlib.import_module(name + ".nodes.host")
print(json.dumps({"nodes": sorted(pack.NODE_CLASS_MAPPINGS), "web": pack.WEB_DIRECTORY,
                  "host": host.__name__, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

INSTALLED = r"""
import json, sys
import easyanimate_core
from easyanimate_core.errors import CheckpointError
print(json.dumps({"file": easyanimate_core.__file__, "version": easyanimate_core.__version__,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _child(code, *args, cwd):
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pack_imports_by_path_from_a_custom_nodes_folder(pack, tmp_path):
    # Users clone into folders like "vdit-easyanimate.git"; dashes and dots must not matter.
    folder = tmp_path / "custom_nodes" / "vdit-easyanimate.git"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    out = _child(BY_PATH, str(folder), cwd=tmp_path)
    assert out["nodes"] == sorted(pack.NODE_CLASS_MAPPINGS)
    assert out["web"] == "./web" and out["host"].endswith(".nodes.host")
    assert not set(HEAVY) & set(out["modules"]), "importing the pack must not load heavy libraries"
    assert not {"comfy", "folder_paths", "latent_preview"} & set(out["modules"])


def test_easyanimate_core_imports_as_an_installed_package(tmp_path):
    out = _child(INSTALLED, cwd=tmp_path)           # cwd outside the repo: only the install finds it
    assert Path(out["file"]).parent.name == "easyanimate_core"
    assert out["version"]
    assert not set(HEAVY) & set(out["modules"])
