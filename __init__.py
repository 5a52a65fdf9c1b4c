"""ComfyUI entry point.

ComfyUI imports this file by path as a package, so everything below uses relative imports.
Only node class definitions load here; models, transformers and the training code load when a
node first runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
