"""The one place where the pack talks to its host: ComfyUI when it runs us, plain torch otherwise.

Every other node module asks this one for model files, devices, progress bars, interruption,
previews and memory management, so the pack's contact surface with ComfyUI internals (which are
not a versioned API) stays in a single file.

ComfyUI counts as present when it has already imported the module a service needs
(``folder_paths``, ``comfy.model_management``, ``comfy.utils``, ``comfy.model_patcher``,
``comfy.cli_args``): a running ComfyUI loads all of them before any custom node. We never import
them ourselves, because outside a running ComfyUI that import would set up devices behind
ComfyUI's back (on CPU-only torch ``comfy.model_management`` even fails unless ``--cpu`` was
parsed), and headless users must not pay for it. Without ComfyUI every service falls back to
plain torch / tqdm behaviour.
"""

from __future__ import annotations

import os
import sys

import torch

from ..easyanimate_core.errors import CheckpointError
from ..easyanimate_core.progress import ProgressFn, console

MODEL_FOLDER = "easyanimate"
# Headless stand-in for ComfyUI's model folders: one or more folders (os.pathsep-separated).
MODELS_DIR_ENV = "VDIT_MODELS_DIR"
# ComfyUI's ``folder_paths.supported_pt_extensions``; used for listing when ComfyUI is absent.
WEIGHT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# Files that make a directory a loadable model folder (diffusers / EasyAnimate release layout).
_MODEL_FOLDER_MARKER = "config.json"
# The pack's own models (the embedded default model): listed after the user's folders.
PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
_DIFFUSERS_WEIGHTS_PREFIX = "diffusion_pytorch_model."

# SD1.5 latent -> RGB projection (rows: the 4 latent channels; columns: R, G, B). A cheap
# approximation for any 4-channel SD-family latent, good enough to watch a sample take shape.
_LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)

_PATCHER_ATTR = "_vdit_host_patcher"


def _comfy(name: str):
    """ComfyUI's module ``name`` if the running ComfyUI has loaded it, else None."""
    return sys.modules.get(name)


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------

def _register_model_folder() -> None:
    """Add ``models/easyanimate`` and the pack's own ``models/`` to ComfyUI's model folders, keeping
    paths already registered for the key (extra_model_paths.yaml is applied before custom nodes load)."""
    folder_paths = _comfy("folder_paths")
    if folder_paths is None:
        return
    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    folder_paths.add_model_folder_path(MODEL_FOLDER, PACK_MODELS)  # the shipped workflows' default model
    extensions = folder_paths.folder_names_and_paths[MODEL_FOLDER][1]
    # A new key starts with an empty set, which ComfyUI reads as "every file". Another pack may
    # have registered the key with a container of its own; leave that one alone.
    if isinstance(extensions, set):
        extensions.update(folder_paths.supported_pt_extensions)


def _model_roots(key: str) -> list[str]:
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None:
        return folder_paths.get_folder_paths(key)
    configured = os.environ.get(MODELS_DIR_ENV, "")
    if configured.strip():
        return [path for path in configured.split(os.pathsep) if path]
    return [os.path.abspath(os.path.join("models", key))]


def _weight_extensions(key: str):
    folder_paths = _comfy("folder_paths")
    if folder_paths is not None:
        return folder_paths.folder_names_and_paths[folder_paths.map_legacy(key)][1]
    return WEIGHT_EXTENSIONS


def _is_model_folder(filenames: list[str]) -> bool:
    return _MODEL_FOLDER_MARKER in filenames or any(f.startswith(_DIFFUSERS_WEIGHTS_PREFIX) for f in filenames)


def model_files(key: str = MODEL_FOLDER, loadable: str | None = None) -> list[str]:
    """Names for a model combo box: weight files, and model folders (a folder holding a
    ``config.json`` or ``diffusion_pytorch_model.*``) by their relative path. Files inside a model
    folder are not listed separately: the folder is what a loader takes. ``loadable``: only what
    that loader can take (a tag of ``checkpoints.detect.loadable_as``: config.json / key names
    only, cached per file change)."""
    names = _all_model_files(key)
    if loadable is None:
        return names
    from ..easyanimate_core.checkpoints.detect import loadable_as

    return [name for name in names if loadable in loadable_as(model_path(name, key))]


def _all_model_files(key: str) -> list[str]:
    extensions = _weight_extensions(key)
    names = set()
    for root in _model_roots(key):
        for dirpath, subdirs, filenames in os.walk(root, followlinks=True):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # .git, .cache, ...
            relative = os.path.relpath(dirpath, root)
            if relative != "." and _is_model_folder(filenames):
                names.add(relative)
                subdirs[:] = []
                continue
            for filename in filenames:
                # An empty extension set means "every file" in ComfyUI.
                if not extensions or os.path.splitext(filename)[1].lower() in extensions:
                    names.add(os.path.normpath(os.path.join(relative, filename)))
    return sorted(names)


def model_path(name: str, key: str = MODEL_FOLDER) -> str:
    """Full path of a file or model folder listed by :func:`model_files`."""
    roots = _model_roots(key)
    relative = os.path.relpath(os.path.join(os.sep, name or ""), os.sep)  # no escaping the roots
    if relative != ".":
        for root in roots:
            candidate = os.path.join(root, relative)
            if os.path.exists(candidate):
                return candidate
    if _comfy("folder_paths") is not None:
        fix = f"put it in ComfyUI/models/{key} (or a folder listed for '{key}' in extra_model_paths.yaml)"
    else:
        fix = f"put it in {roots[0]} or point {MODELS_DIR_ENV} at the folder that holds it"
    raise CheckpointError(f"model '{name}' was not found in {', '.join(roots)}; {fix}.")


def comfy_t5_tokenizer() -> str | None:
    """The T5 tokenizer folder ComfyUI ships (``comfy/text_encoders/t5_tokenizer``, what its own
    t5xxl loaders use), found through the running ComfyUI's ``comfy`` package; None headless or
    when that ComfyUI has none."""
    comfy = _comfy("comfy")
    for package_dir in getattr(comfy, "__path__", ()):
        folder = os.path.join(package_dir, "text_encoders", "t5_tokenizer")
        if os.path.isdir(folder):
            return folder
    return None


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------

def torch_device() -> torch.device:
    """Where models compute."""
    mm = _comfy("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where idle models wait."""
    mm = _comfy("comfy.model_management")
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where IMAGE / LATENT outputs live between nodes."""
    mm = _comfy("comfy.model_management")
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Progress, interruption, previews
# ---------------------------------------------------------------------------------------------

def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel; no-op headless. The
    sampler node hands it to the core as ``SamplingOptions.interrupt``, which calls it before
    every DiT block, so Cancel lands within one block however long a step takes."""
    mm = _comfy("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def previews_enabled() -> bool:
    cli_args = _comfy("comfy.cli_args")
    return cli_args is not None and cli_args.args.preview_method != cli_args.LatentPreviewMethod.NoPreviews


def latent_preview(latents):
    """A small RGB picture of a 4-channel latent, (B, 4, H, W) or (B, 4, F, H, W) (middle frame
    of the first video), or None for anything else. Expects latents in the DiT's scaled space."""
    if not torch.is_tensor(latents) or latents.ndim not in (4, 5) or latents.shape[1] != 4:
        return None
    from PIL import Image

    latent = latents[0].detach()
    if latent.ndim == 4:
        latent = latent[:, latent.shape[1] // 2]
    factors = torch.tensor(_LATENT_RGB_FACTORS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent.to("cpu", torch.float32), factors)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def progress(total: int) -> ProgressFn:
    """A ``progress(done, total, preview=None)`` callable for one node run. In ComfyUI it drives
    the node's progress bar (create it while the node executes), raises on Cancel and shows
    preview latents when previews are on; headless it is a tqdm bar."""
    utils = _comfy("comfy.utils")
    if utils is None:
        return console("VideoDiT")
    bar = utils.ProgressBar(total)

    def report(done: int, total: int, preview=None) -> None:
        check_interrupt()
        image = latent_preview(preview) if preview is not None and previews_enabled() else None
        payload = None if image is None else ("JPEG", image, _comfy("comfy.cli_args").args.preview_size)
        bar.update_absolute(done, total, payload)

    return report


# ---------------------------------------------------------------------------------------------
# Memory management
# ---------------------------------------------------------------------------------------------

class _HostedModule(torch.nn.Module):
    """What ComfyUI's ModelPatcher holds: it sets bookkeeping attributes (``device``,
    ``model_lowvram``, ...) on its model, which must not land on (or clash with) the core's own
    module attributes."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


def _patcher(module: torch.nn.Module, mm, model_patcher):
    # Kept on the module itself: the memory manager only holds patchers weakly, and a cache
    # keyed weakly by module would be kept alive forever by its own value (patcher -> module).
    # The module <-> patcher cycle dies with the module.
    patcher = module.__dict__.get(_PATCHER_ATTR)
    if patcher is None:
        patcher = model_patcher.ModelPatcher(_HostedModule(module), load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
        module.__dict__[_PATCHER_ATTR] = patcher
    return patcher


def load_models(modules: list[torch.nn.Module], memory_required: int = 0) -> None:
    """Put ``modules`` on the compute device before running them. In ComfyUI the memory manager
    does it, offloading other models (text encoder, other packs' models) to make room for these
    plus ``memory_required`` bytes of activations."""
    mm, model_patcher = _comfy("comfy.model_management"), _comfy("comfy.model_patcher")
    if mm is None or model_patcher is None:
        device = torch_device()
        for module in modules:
            module.to(device)
        return
    patchers = [_patcher(module, mm, model_patcher) for module in modules]
    # Full loads only: partial (lowvram) loading streams weights just for comfy.ops layers, and
    # the core builds plain torch layers.
    mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
    for patcher in patchers:
        # --novram still asks for a partial load; such a model would compute on the wrong device.
        if patcher.loaded_size() < patcher.model_size():
            patcher.model.to(patcher.load_device)


def release_models(modules: list[torch.nn.Module]) -> None:
    """Move ``modules`` to the offload device and return their memory to the host."""
    mm = _comfy("comfy.model_management")
    if mm is None:
        for module in modules:
            module.to(offload_device())
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    for module in modules:
        patcher = module.__dict__.get(_PATCHER_ATTR)
        if patcher is None:  # never loaded through the memory manager
            module.to(mm.unet_offload_device())
            continue
        for index in reversed(range(len(mm.current_loaded_models))):
            loaded = mm.current_loaded_models[index]
            if loaded.model is patcher and loaded.model_unload():
                mm.current_loaded_models.pop(index)
        patcher.model.to(patcher.offload_device)
    mm.soft_empty_cache()


_register_model_folder()
