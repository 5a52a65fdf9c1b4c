"""ComfyUI workflow formats for tests: node definitions, UI workflow -> API prompt, prompt checks.

A saved (UI) workflow stores each node's widget values positionally (``widgets_values``) and its
connections as links ``[id, from_node, from_slot, to_node, to_slot, type]``; ``/prompt`` takes
the API format ``{id: {"class_type", "inputs": {name: value | [from_node, from_slot]}}}``. The
frontend converts with the node definitions of ``/object_info``; this module does the same with
the same rules as frontends 1.27 (ComfyUI 0.3.64) and 1.49 (ComfyUI 0.8.0), reading each node's
layout from its definition:

- inputs whose type is INT / FLOAT / STRING / BOOLEAN / COMBO (a list of options, or ``"COMBO"``
  with ``options``) or a dynamic combo are widgets, unless ``forceInput``; every other input is a
  socket;
- a dynamic combo (``COMFY_DYNAMICCOMBO_V3``, ComfyUI 0.8+: ``{"options": [{"key", "inputs"}]}``)
  stores its chosen key, then the values of that option's own inputs, which the API names
  ``<combo>.<input>`` (nested combos nest the prefix);
- an INT with ``control_after_generate`` (or named ``seed`` / ``noise_seed``) stores one extra
  value after its own (fixed / increment / decrement / randomize), and an upload combo
  (``image_upload`` / ``video_upload``) stores one extra value (the upload button);
- a widget that is also linked takes the link; missing trailing values take the defaults (a
  node that gained inputs loads old workflows this way) and values past the last widget are
  ignored (a node whose widgets were merged, e.g. SaveVideo's format + codec into one dynamic
  ``codec`` combo in current ComfyUI, loads old workflows this way);
- frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) and muted nodes (mode 2) are
  not part of the prompt.

``check_prompt`` repeats the server's validation (required inputs, link types, numeric ranges,
combo options), so a workflow can be checked where no ComfyUI runs.
"""

from __future__ import annotations

import json

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")
MUTED = 2


def node_definition(node_id: str, cls, display_name: str | None = None) -> dict:
    """The ``/object_info`` entry of a classic (V1) node class, as ComfyUI's server builds it."""
    # through JSON, as /object_info serves it (tuples become lists, e.g. tuple combos)
    inputs = json.loads(json.dumps(cls.INPUT_TYPES()))
    outputs = list(cls.RETURN_TYPES)
    return {
        "input": inputs,
        "input_order": {group: list(values) for group, values in inputs.items()},
        "output": outputs,
        "output_name": list(getattr(cls, "RETURN_NAMES", outputs)),
        "name": node_id,
        "display_name": display_name or node_id,
        "category": getattr(cls, "CATEGORY", ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }


def pack_definitions(pack) -> dict:
    return {node_id: node_definition(node_id, cls, pack.NODE_DISPLAY_NAME_MAPPINGS.get(node_id))
            for node_id, cls in pack.NODE_CLASS_MAPPINGS.items()}


def input_type(spec) -> str:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def input_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_values(spec) -> list:
    if isinstance(spec[0], list):
        return spec[0]
    options = input_options(spec).get("options", [])
    return [option["key"] for option in options] if input_type(spec) == DYNAMIC_COMBO else options


def dynamic_inputs(name: str, spec, chosen) -> list:
    """(name, spec, required) of the inputs a dynamic combo's chosen option adds, API-named."""
    option = next((o for o in input_options(spec).get("options", []) if o["key"] == chosen), None)
    if option is None:
        return []
    return [(f"{name}.{sub}", sub_spec, group == "required")
            for group in ("required", "optional") for sub, sub_spec in option["inputs"].get(group, {}).items()]


def is_widget(spec) -> bool:
    return input_type(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput")


def ordered_inputs(definition: dict) -> list:
    """(name, spec, required) of the visible inputs in the node's order (required, then optional)."""
    order = definition.get("input_order") or {g: list(v) for g, v in definition["input"].items()}
    return [(name, definition["input"][group][name], group == "required")
            for group in ("required", "optional") for name in order.get(group, [])]


def expanded_inputs(definition: dict, values: dict) -> list:
    """ordered_inputs with each dynamic combo followed by the inputs of its option in ``values``."""
    expanded = []

    def add(name, spec, required):
        expanded.append((name, spec, required))
        if input_type(spec) == DYNAMIC_COMBO:
            for entry in dynamic_inputs(name, spec, values.get(name)):
                add(*entry)

    for entry in ordered_inputs(definition):
        add(*entry)
    return expanded


def extra_widget_values(name: str, spec) -> int:
    """UI-only values stored after this widget's own value."""
    options = input_options(spec)
    if input_type(spec) == "INT" and (options.get("control_after_generate") or name in SEED_NAMES):
        return 1
    return 1 if any(options.get(flag) for flag in UPLOAD_FLAGS) else 0


def default_value(spec):
    options = input_options(spec)
    if "default" in options:
        return options["default"]
    kind = input_type(spec)
    if kind in ("COMBO", DYNAMIC_COMBO):
        values = combo_values(spec)
        return values[0] if values else None
    return {"INT": options.get("min", 0), "FLOAT": options.get("min", 0.0), "STRING": "", "BOOLEAN": False}[kind]


def widget_values_by_name(node: dict, definition: dict) -> dict:
    """Map a UI node's positional ``widgets_values`` to input names (defaults for missing ones)."""
    stored = node.get("widgets_values") or []
    if isinstance(stored, dict):  # some nodes (e.g. video previews) store a dict by name
        return dict(stored)
    values, position = {}, 0

    def take(name, spec):
        nonlocal position
        if not is_widget(spec):
            return
        values[name] = stored[position] if position < len(stored) else default_value(spec)
        position += 1 + extra_widget_values(name, spec)
        if input_type(spec) == DYNAMIC_COMBO:  # the chosen option's values follow its key
            for sub_name, sub_spec, _ in dynamic_inputs(name, spec, values[name]):
                take(sub_name, sub_spec)

    for name, spec, _ in ordered_inputs(definition):
        take(name, spec)
    return values


def ui_to_api(workflow: dict, definitions: dict) -> dict:
    """The API prompt of a UI workflow (``definitions``: ``/object_info``-shaped, by node type)."""
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == MUTED:
            continue
        if node["type"] not in definitions:
            raise KeyError(f"node {node['id']} has type {node['type']!r}, which no definition provides "
                           f"(a missing node)")
        definition = definitions[node["type"]]
        inputs = widget_values_by_name(node, definition)
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            _, source, source_slot, target, _, _ = links[slot["link"]]
            assert target == node["id"], f"link {slot['link']} does not end at node {node['id']}"
            if nodes[source].get("mode", 0) == MUTED:
                continue
            inputs[slot["name"]] = [str(source), source_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or definition.get("display_name", "")}}
    return prompt


def _type_matches(output_type: str, input_type_: str) -> bool:
    if "*" in (output_type, input_type_):
        return True
    return bool(set(output_type.split(",")) & set(input_type_.split(",")))


def check_prompt(prompt: dict, definitions: dict, file_combos=frozenset()) -> list:
    """Problems the server's validation would report, as sentences (empty list: valid).

    ``file_combos``: (node type, input) pairs whose options are file lists that differ per
    installation; their values are only checked to be non-empty strings."""
    errors = []
    for node_id, node in prompt.items():
        definition = definitions.get(node["class_type"])
        where = f"node {node_id} ({node['class_type']})"
        if definition is None:
            errors.append(f"{where}: unknown node type")
            continue
        given = node["inputs"]
        known = expanded_inputs(definition, given)
        for name, spec, required in known:
            if name not in given:
                if required:
                    errors.append(f"{where}: required input {name!r} is missing")
                continue
            value = given[name]
            kind = input_type(spec)
            options = input_options(spec)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = prompt.get(value[0])
                if source is None:
                    errors.append(f"{where}: input {name!r} links to missing node {value[0]}")
                    continue
                outputs = definitions[source["class_type"]]["output"]
                if value[1] >= len(outputs):
                    errors.append(f"{where}: input {name!r} links to output {value[1]} of {value[0]}, which has "
                                  f"{len(outputs)}")
                elif not _type_matches(outputs[value[1]], kind):
                    errors.append(f"{where}: input {name!r} expects {kind} but is linked to a {outputs[value[1]]}")
                continue
            if not is_widget(spec):
                errors.append(f"{where}: socket input {name!r} has a literal value {value!r}")
            elif kind in ("COMBO", DYNAMIC_COMBO):
                if (node["class_type"], name) in file_combos:
                    if not isinstance(value, str) or not value:
                        errors.append(f"{where}: file input {name!r} is {value!r}")
                elif value not in combo_values(spec):
                    errors.append(f"{where}: {name!r} = {value!r} is not one of {combo_values(spec)}")
            elif kind in ("INT", "FLOAT"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        kind == "INT" and not float(value).is_integer()):
                    errors.append(f"{where}: {name!r} = {value!r} is not a {kind}")
                    continue
                if "min" in options and value < options["min"]:
                    errors.append(f"{where}: {name!r} = {value} is below the minimum {options['min']}")
                if "max" in options and value > options["max"]:
                    errors.append(f"{where}: {name!r} = {value} is above the maximum {options['max']}")
            elif kind == "STRING" and not isinstance(value, str):
                errors.append(f"{where}: {name!r} = {value!r} is not a string")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                errors.append(f"{where}: {name!r} = {value!r} is not a boolean")
        known_names = {name for name, _, _ in known}
        errors += [f"{where}: unknown input {name!r}" for name in given if name not in known_names]
    if not any(definitions[n["class_type"]].get("output_node") for n in prompt.values()
               if n["class_type"] in definitions):
        errors.append("the prompt has no output node")
    return errors
