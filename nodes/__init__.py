"""Node registry: gathers the mappings of every ``*_nodes.py`` module in this folder.

Each module defines ``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``. Node ids and
custom types carry the ``VDiT_`` / ``VDIT_`` prefix so they never collide with other packs.
"""

import pkgutil
from importlib import import_module

from . import host  # noqa: F401  (registers models/easyanimate with ComfyUI at pack import)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.endswith("_nodes"):
        continue
    _module = import_module(f".{_info.name}", __name__)
    for _node_id in _module.NODE_CLASS_MAPPINGS:
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"node id {_node_id} is defined twice (second time in nodes/{_info.name}.py)")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
