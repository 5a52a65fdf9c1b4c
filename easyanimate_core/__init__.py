"""easyanimate_core: the engine behind the node pack and the training toolkit.

Never imports ComfyUI. Heavy submodules load on first use, so importing the pack stays cheap.
Public entry points (resolved lazily):

    load_vae(path, ...)                      -> slice / MagViT video VAE
    load_transformer(path, motion_module=None, config=None, ...) -> video DiT
    inspect_checkpoint(path)                 -> what a weights file is (family, version, config)
"""

from importlib import import_module

__version__ = "0.1.0"

# name -> submodule that defines it (relative to this package)
_EXPORTS = {
    "load_vae": ".models.vae",
    "load_transformer": ".models.transformer",
    "load_motion_module": ".models.motion_module",
    "load_lora": ".models.lora",
    "ModelHandle": ".models.handle",
    "inspect_checkpoint": ".checkpoints",
    "load_state_dict": ".checkpoints",
    "save_state_dict": ".checkpoints",
    "resolve_transformer_config": ".checkpoints",
    "resolve_vae_config": ".checkpoints",
    "normalize_lora": ".checkpoints",
    "TextEncoder": ".models.text_encoder",
    "normalize_text_embeddings": ".models.text_encoder",
    "sample": ".sampling.samplers",
    "generate": ".sampling.pipeline",
    "denoise": ".sampling.pipeline",
    "load_components": ".sampling.pipeline",
    "Components": ".sampling.pipeline",
    "ContextWindows": ".sampling.context",
    "SamplingOptions": ".sampling.options",
    "CheckpointError": ".errors",
    "InputError": ".errors",
    "EasyAnimateError": ".errors",
    "Interrupted": ".progress",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
