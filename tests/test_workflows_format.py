"""The example workflows in workflows/: UI format as the frontend saves it, conversion to the API
prompt format with the node definitions (ours from the pack, native ones from a recorded
/object_info snapshot of ComfyUI 0.3.64), and the server's validation rules. Runs without ComfyUI."""

import copy
import json
from pathlib import Path

import pytest
import workflow_builder
import workflow_format as wf

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.json"))
UI_KEYS = {"last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"}
NODE_KEYS = {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties", "widgets_values"}
# Native inputs whose options are the files of ComfyUI/input (empty in the snapshot).
UPLOAD_COMBOS = frozenset({("LoadImage", "image"), ("LoadVideo", "file")})


@pytest.fixture(scope="module")
def definitions(tmp_path_factory, pack):
    """Definitions with the model combos listing a models folder laid out as the workflows expect."""
    root = tmp_path_factory.mktemp("models")
    for name in workflow_builder.MODEL_FILES.values():
        path = root / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        else:  # a model folder: listed by its relative path
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")
    patch = pytest.MonkeyPatch()
    patch.setenv("VDIT_MODELS_DIR", str(root))
    # the placeholders are empty: let every loader list them (what loads where is tested elsewhere)
    from easyanimate_core.checkpoints import detect

    every_loader = frozenset({detect.DIT, detect.MOTION_MODULE, detect.VAE, detect.T5, detect.CLIP_VISION,
                              detect.LORA, detect.MOTION_LORA, detect.DOMAIN_ADAPTER})
    patch.setattr(detect, "loadable_as", lambda path: every_loader)
    try:
        yield workflow_builder.definitions()
    finally:
        patch.undo()


def _load(path):
    return json.loads(path.read_text())


def test_the_six_use_cases_are_there():
    assert {p.name for p in WORKFLOW_FILES} == set(workflow_builder.WORKFLOWS_BUILT)
    assert len(WORKFLOW_FILES) == 6


def test_workflows_are_what_the_builder_makes(definitions):
    built = workflow_builder.build_all()
    for path in WORKFLOW_FILES:
        assert path.read_text() == workflow_builder.serialise(built[path.name]), (
            f"{path.name} is out of date: run python tests/workflow_builder.py")


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_ui_format(path):
    flow = _load(path)
    assert UI_KEYS <= set(flow) and flow["version"] == 0.4
    ids = [node["id"] for node in flow["nodes"]]
    assert len(set(ids)) == len(ids) and flow["last_node_id"] == max(ids)
    assert flow["last_link_id"] == max(link[0] for link in flow["links"])
    nodes = {node["id"]: node for node in flow["nodes"]}
    for node in flow["nodes"]:
        assert NODE_KEYS <= set(node), f"node {node['id']} lacks {NODE_KEYS - set(node)}"
        if node["type"] != "Note":
            assert node["properties"]["Node name for S&R"] == node["type"]
    assert sorted(node["order"] for node in flow["nodes"]) == list(range(len(nodes)))
    for link_id, source, source_slot, target, target_slot, kind in flow["links"]:
        assert link_id in nodes[source]["outputs"][source_slot]["links"]
        assert nodes[source]["outputs"][source_slot]["type"] == kind
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[source]["order"] < nodes[target]["order"]
    notes = [node for node in flow["nodes"] if node["type"] == "Note"]
    assert len(notes) == 1 and "models/easyanimate" in notes[0]["widgets_values"][0]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_converts_to_a_valid_api_prompt(path, definitions):
    flow = _load(path)
    prompt = wf.ui_to_api(flow, definitions)
    assert "Note" not in {node["class_type"] for node in prompt.values()}
    assert len(prompt) == len(flow["nodes"]) - 1
    assert wf.check_prompt(prompt, definitions, UPLOAD_COMBOS) == []
    types = {node["class_type"] for node in prompt.values()}
    assert {"VDiT_Sampler", "VDiT_VAEDecode"} <= types
    assert types & {"SaveVideo", "SaveImage"}
    # every model file it names is one the loaders list for the published layout
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if name.endswith("_name") and node["class_type"].startswith("VDiT_Load"):
                assert value in workflow_builder.MODEL_FILES.values()


def test_seed_keeps_its_control_value_and_widgets_map_by_position(definitions):
    flow = _load(ROOT / "workflows" / "text_to_video.json")
    sampler = next(node for node in flow["nodes"] if node["type"] == "VDiT_Sampler")
    assert sampler["widgets_values"][:3] == [workflow_builder.SETTINGS["seed"], "fixed",
                                             workflow_builder.SETTINGS["steps"]]
    inputs = wf.ui_to_api(flow, definitions)[str(sampler["id"])]["inputs"]
    assert inputs["seed"] == workflow_builder.SETTINGS["seed"] and inputs["steps"] == workflow_builder.SETTINGS["steps"]
    assert inputs["cfg"] == workflow_builder.SETTINGS["cfg"] and inputs["denoise"] == 1.0
    assert "control_after_generate" not in inputs


def test_video_to_video_takes_the_frame_rate_through_a_link(definitions):
    prompt = wf.ui_to_api(_load(ROOT / "workflows" / "video_to_video.json"), definitions)
    create = next(node for node in prompt.values() if node["class_type"] == "CreateVideo")
    source = prompt[create["inputs"]["fps"][0]]
    assert source["class_type"] == "GetVideoComponents" and create["inputs"]["fps"][1] == 2


# --------------------------------------------------------------------------- the checker fails when it should

def _prompt(definitions, name="text_to_video.json"):
    return wf.ui_to_api(_load(ROOT / "workflows" / name), definitions)


def _node(prompt, class_type):
    return next(node for node in prompt.values() if node["class_type"] == class_type)


@pytest.mark.parametrize("break_it,message", [
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(steps=0), "below the minimum"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(denoise=1.5), "above the maximum"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(sampler_name="lms"), "is not one of"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(latent_image=_node_link(p, "VDiT_LoadT5")), "expects LATENT"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].pop("model"), "required input 'model' is missing"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(steps="25"), "is not a INT"),
    (lambda p: _node(p, "VDiT_LoadDiT")["inputs"].update(dit_name="other/transformer"), "is not one of"),
    (lambda p: _node(p, "VDiT_Sampler")["inputs"].update(sigma=1), "unknown input"),
    (lambda p: [p.pop(k) for k in [k for k, n in p.items() if n["class_type"] == "SaveVideo"]], "no output node"),
])
def test_checker_reports_what_the_server_would_reject(definitions, break_it, message):
    prompt = _prompt(definitions)
    break_it(prompt)
    errors = wf.check_prompt(prompt, definitions, UPLOAD_COMBOS)
    assert any(message in error for error in errors), errors


def _node_link(prompt, class_type):
    return [next(k for k, n in prompt.items() if n["class_type"] == class_type), 0]


def test_converter_handles_missing_trailing_values_muted_nodes_and_unknown_types(definitions):
    flow = _load(ROOT / "workflows" / "text_to_video.json")
    older = copy.deepcopy(flow)
    sampler = next(node for node in older["nodes"] if node["type"] == "VDiT_Sampler")
    sampler["widgets_values"] = sampler["widgets_values"][:-1]  # saved before 'denoise' existed
    assert wf.ui_to_api(older, definitions)[str(sampler["id"])]["inputs"]["denoise"] == 1.0

    muted = copy.deepcopy(flow)
    save = next(node for node in muted["nodes"] if node["type"] == "SaveVideo")
    save["mode"] = wf.MUTED
    assert str(save["id"]) not in wf.ui_to_api(muted, definitions)

    missing = copy.deepcopy(flow)
    missing["nodes"][1]["type"] = "EasyAnimateSampler"
    with pytest.raises(KeyError, match="missing node"):
        wf.ui_to_api(missing, definitions)

    extra = copy.deepcopy(flow)
    sampler = next(node for node in extra["nodes"] if node["type"] == "VDiT_Sampler")
    sampler["widgets_values"].append(123)
    with pytest.raises(ValueError, match="widget values"):
        wf.ui_to_api(extra, definitions)


def test_native_snapshot_covers_every_native_node_used():
    native = json.loads(workflow_builder.NATIVE_SNAPSHOT.read_text())["nodes"]
    used = {node["type"] for path in WORKFLOW_FILES for node in _load(path)["nodes"]}
    ours = {t for t in used if t.startswith("VDiT_")}
    assert used - ours - {"Note"} <= set(native)
    assert native["SaveVideo"]["output_node"] and native["CreateVideo"]["input_order"]["required"] == ["images", "fps"]


def test_node_inputs_are_only_ever_appended(pack):
    """Every input a node had when its workflows were saved keeps its place and type."""
    recorded = json.loads((ROOT / "tests" / "fixtures" / "vdit_node_inputs.json").read_text())["nodes"]
    current = wf.pack_definitions(pack)
    assert set(recorded) <= set(current), f"nodes removed: {set(recorded) - set(current)}"
    for node_id, inputs in recorded.items():
        now = [[name, wf.input_type(spec)] for name, spec, _ in wf.ordered_inputs(current[node_id])]
        assert now[:len(inputs)] == inputs, f"{node_id}: inputs reordered, removed or retyped"
