"""Smoke test against a real ComfyUI (COMFYUI_DIR): the pack loads from custom_nodes, every node
it defines shows up in /object_info, and the harness runs a graph end to end."""

import subprocess

import pytest
from comfyui_server import PACK_FOLDER, PromptRejected, comfyui_fixture

pytestmark = pytest.mark.comfyui
comfyui = comfyui_fixture()


def _comfyui_identity(server) -> str:
    version = server.get_json("/system_stats")["system"]["comfyui_version"]
    commit = subprocess.run(["git", "-C", str(server.comfy_dir), "rev-parse", "--short", "HEAD"],
                            check=False, capture_output=True, text=True).stdout.strip()
    return f"ComfyUI {version} ({commit or 'not a git checkout'}) at {server.comfy_dir}"


def test_pack_imports_and_registers_every_node(comfyui, pack):
    print(_comfyui_identity(comfyui))
    pack_lines = [line for line in comfyui.log_text().splitlines()
                  if line.rstrip().endswith(f"custom_nodes/{PACK_FOLDER}")]
    print("\n".join(pack_lines))
    assert pack_lines and not any("IMPORT FAILED" in line for line in pack_lines), comfyui.log_tail()

    info = comfyui.object_info()
    ours = {node for node, spec in info.items() if spec["python_module"] == f"custom_nodes.{PACK_FOLDER}"}
    print(f"{len(ours)} pack nodes in /object_info: {sorted(ours)}")
    assert ours == set(pack.NODE_CLASS_MAPPINGS)
    for node in ours:
        assert info[node]["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS.get(node, node)


def test_model_folder_is_registered(comfyui):
    assert "easyanimate" in comfyui.get_json("/models")
    listed = comfyui.get_json("/models/easyanimate")      # the scratch base has none: only the pack's own
    assert listed and all(name.startswith("vdit_default/") for name in listed), listed
    assert "vdit_default/motion_lora/pan_left.safetensors" in listed


def test_harness_runs_a_graph_and_fetches_its_output(comfyui):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0xFF0000}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "smoke/red"}},
    }
    prompt_id, messages = comfyui.run(prompt, timeout=120)
    types = [m["type"] for m in messages if isinstance(m, dict)]
    assert "execution_success" in types and types[-1] == "executing"
    saved = comfyui.history(prompt_id)["outputs"]["2"]["images"]
    assert [image["subfolder"] for image in saved] == ["smoke", "smoke"]
    png = comfyui.view(saved[0]["filename"], saved[0]["subfolder"], saved[0]["type"])
    assert png.startswith(b"\x89PNG")


def test_harness_reports_rejected_prompts(comfyui):
    with pytest.raises(PromptRejected) as info:
        comfyui.queue_prompt({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                                           "batch_size": 1, "color": 0}}})
    assert info.value.body["error"]["type"] == "prompt_no_outputs"
