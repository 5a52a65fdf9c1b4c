"""DiT loaders and patches: the transformer, standalone motion modules, MotionLoRAs, LoRAs and
domain adapters. Every node returns a new VDIT_MODEL handle (see
``easyanimate_core.models.handle.ModelHandle``); inputs are never modified, so branches of a
graph do not see each other's patches. Patches take effect inside the sampler only.
"""

from __future__ import annotations

import torch

from ..easyanimate_core.checkpoints import detect
from ..easyanimate_core.errors import CheckpointError, InputError
from ..easyanimate_core.models.handle import ModelHandle
from ..easyanimate_core.models.lora import load_lora
from ..easyanimate_core.models.motion_module import MotionModuleSet, load_motion_module
from ..easyanimate_core.models.transformer import load_transformer
from . import host
from .choices import check_choice

WEIGHT_DTYPES = ("default", "fp32", "bf16", "fp16", "fp8_e4m3fn")
ATTENTION_BACKENDS = ("sdpa", "xformers", "chunked")
PRESETS = ("auto", "v1", "v2", "v3")
# The motion-module combo keeps its options in their first order (saved workflows store "v1"); auto,
# appended later, is its default.
MOTION_PRESETS = (*PRESETS[1:], PRESETS[0])
LORA_FOLDERS = ("easyanimate", "loras")


def _weight_dtypes(choice: str, device: torch.device):
    """(weight dtype, compute dtype) for a dtype choice on the compute device."""
    cuda = device.type == "cuda"
    fast = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    table = {"default": (fast, None), "fp32": (torch.float32, None), "bf16": (torch.bfloat16, None),
             "fp16": (torch.float16, None), "fp8_e4m3fn": (torch.float8_e4m3fn, fast)}
    return table[check_choice("weight_dtype", choice, WEIGHT_DTYPES)]


def _lora_files(loadable: str = detect.LORA) -> list[str]:
    return sorted({name for key in LORA_FOLDERS for name in host.model_files(key, loadable)})


def _lora_path(name: str) -> str:
    for key in LORA_FOLDERS[:-1]:
        try:
            return host.model_path(name, key)
        except CheckpointError:
            pass
    return host.model_path(name, LORA_FOLDERS[-1])


def _handle(model) -> ModelHandle:
    if not isinstance(model, ModelHandle):
        raise InputError(f"the model input is a {type(model).__name__}, expected the VDIT_MODEL output of "
                         f"'Load EasyAnimate DiT'; connect that node.")
    return model


class VDiT_LoadDiT:
    DESCRIPTION = ("Loads an EasyAnimate v1-v3 video DiT or a PixArt-alpha base from models/easyanimate: a released "
                   "transformer/ folder (config.json + weights) or a single weights file. A PixArt base loads as the "
                   "image model; add a motion module with 'Apply EasyAnimate Motion Module'.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": (host.model_files(loadable=detect.DIT), {"tooltip": "A transformer/ folder of a release, or a weights file "
                                                         "(EasyAnimate transformer or PixArt-alpha base)."}),
            "weight_dtype": (WEIGHT_DTYPES, {"default": "default", "tooltip": (
                "Precision the weights are kept in. default: bf16 (fp16 without bf16 support) on GPU, fp32 on CPU. "
                "fp8_e4m3fn stores Linear weights in 8 bits (half the memory of bf16) and computes in bf16.")}),
            "config_preset": (PRESETS, {"default": "auto", "tooltip": (
                "Attention heads and motion-module attention types are not stored in weights. auto: the folder's "
                "config.json, else the version detected from the weights (v1 grid, v2 temporal + skips, v3 hybrid "
                "+ inpaint). Choose v1/v2/v3 only for a loose file whose version is misdetected.")}),
        }, "optional": {  # optional: prompts saved before it existed still validate
            "attention": (ATTENTION_BACKENDS, {"default": "sdpa", "tooltip": (
                "Attention kernel of this model. sdpa: PyTorch's scaled_dot_product_attention (flash / "
                "memory-efficient kernels on GPU). xformers: memory_efficient_attention, when xformers is "
                "installed (CUDA). chunked: SDPA on small pieces, the least memory for very long videos.")}),
        }}

    RETURN_TYPES = ("VDIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The video DiT, for the sampler and the motion-module / LoRA nodes.",)
    FUNCTION = "load"
    CATEGORY = "VideoDiT/loaders"

    def load(self, dit_name, weight_dtype="default", config_preset="auto", attention="sdpa"):
        check_choice("config_preset", config_preset, PRESETS)
        check_choice("attention", attention, ATTENTION_BACKENDS)
        dtype, compute = _weight_dtypes(weight_dtype, host.torch_device())
        model = load_transformer(host.model_path(dit_name), config=config_preset, dtype=dtype, compute_dtype=compute,
                                 device=host.offload_device(), attention_backend=attention)
        return (ModelHandle(model),)


class VDiT_LoadMotionModule:
    DESCRIPTION = ("Loads a standalone motion module (e.g. easyanimate_v1_mm.safetensors) or takes the motion modules "
                   "of a full EasyAnimate transformer file, to put into any DiT of the same width and depth.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "motion_name": (host.model_files(loadable=detect.MOTION_MODULE), {"tooltip": "Motion-module weights in models/easyanimate."}),
            "config_preset": (MOTION_PRESETS, {"default": "auto", "tooltip": (
                "Heads and attention types are not stored in weights. A config stored with the file (safetensors "
                "metadata, as the pack's dit-motion and split-motion-module write it, or config.json in the "
                "folder) is always used; the preset only fills in what the file does not declare. auto: that "
                "config; without one the version a full transformer shows, v1 for a standalone file at the "
                "released width (easyanimate_v1_mm), else a guess (logged). v1 = 2x2-cell grid attention, 8 heads; "
                "v2 = temporal, 8 heads; v3 = temporal + global, 16 heads.")}),
        }}

    RETURN_TYPES = ("VDIT_MOTION",)
    RETURN_NAMES = ("motion_module",)
    OUTPUT_TOOLTIPS = ("Motion modules for 'Apply EasyAnimate Motion Module'.",)
    FUNCTION = "load"
    CATEGORY = "VideoDiT/loaders"

    def load(self, motion_name, config_preset="auto"):
        check_choice("config_preset", config_preset, MOTION_PRESETS)
        return (load_motion_module(host.model_path(motion_name), config=config_preset),)


class VDiT_LoadMotionLoRA:
    DESCRIPTION = ("Loads a MotionLoRA (LoRA on the motion modules' attention: camera moves and other motion "
                   "styles). Chain several; they are applied with the motion module.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lora_name": (_lora_files(detect.MOTION_LORA), {"tooltip": "MotionLoRA weights in models/easyanimate or models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05,
                                   "tooltip": "Multiplier of the LoRA update; 0 disables it."}),
        }, "optional": {
            "prev_motion_lora": ("VDIT_MOTION_LORA", {"tooltip": "Earlier MotionLoRAs of the chain; their updates add up."}),
        }}

    RETURN_TYPES = ("VDIT_MOTION_LORA",)
    RETURN_NAMES = ("motion_lora",)
    OUTPUT_TOOLTIPS = ("The MotionLoRA chain, for 'Apply EasyAnimate Motion Module'.",)
    FUNCTION = "load"
    CATEGORY = "VideoDiT/loaders"

    def load(self, lora_name, strength=1.0, prev_motion_lora=None):
        from ..easyanimate_core.checkpoints import load_state_dict

        path = _lora_path(lora_name)
        chain = tuple(prev_motion_lora or ()) + ((load_state_dict(path), path, float(strength)),)
        return (chain,)


class VDiT_ApplyMotionModule:
    DESCRIPTION = ("Puts a motion module (and optional MotionLoRAs) into every block of the DiT, replacing any it has. "
                   "motion_scale scales the motion modules' contribution (1 = as trained, 0 = the image model).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDIT_MODEL", {"tooltip": "The DiT; it is not changed, a patched copy is returned."}),
            "motion_module": ("VDIT_MOTION", {"tooltip": "From 'Load EasyAnimate Motion Module'."}),
            "motion_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                       "tooltip": "Multiplier of every motion module's output (its residual update)."}),
        }, "optional": {
            "motion_lora": ("VDIT_MOTION_LORA", {"tooltip": "From 'Load EasyAnimate MotionLoRA'."}),
        }}

    RETURN_TYPES = ("VDIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The DiT with the motion module applied at sampling time.",)
    FUNCTION = "apply"
    CATEGORY = "VideoDiT/model"

    def apply(self, model, motion_module, motion_scale=1.0, motion_lora=None):
        handle = _handle(model)
        if not isinstance(motion_module, MotionModuleSet):
            raise InputError(f"the motion_module input is a {type(motion_module).__name__}, expected the output of "
                             f"'Load EasyAnimate Motion Module'.")
        handle = handle.with_motion(motion_module, motion_scale=motion_scale)
        layers = handle.motion_layers()
        loras = tuple((load_lora(state, layers, kind="motion_lora", name=source), strength)
                      for state, source, strength in (motion_lora or ()))
        return (handle.with_motion(motion_module, motion_loras=loras, motion_scale=motion_scale),)


class VDiT_LoadLoRA:
    DESCRIPTION = ("Applies a LoRA to the DiT (EasyAnimate/kohya or PEFT/diffusers files) at a strength. Chain several; "
                   "LoRAs that touch the motion modules need the motion module applied first.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDIT_MODEL", {"tooltip": "The DiT; it is not changed, a patched copy is returned."}),
            "lora_name": (_lora_files(), {"tooltip": "LoRA weights in models/easyanimate or models/loras."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.05, "tooltip": (
                "Multiplier of the LoRA update (EasyAnimate's own scripts use 0.55); 0 disables it.")}),
        }}

    RETURN_TYPES = ("VDIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The DiT with the LoRA applied at sampling time.",)
    FUNCTION = "apply"
    CATEGORY = "VideoDiT/loaders"

    def apply(self, model, lora_name, strength=1.0):
        handle = _handle(model)
        return (handle.with_lora(load_lora(_lora_path(lora_name), handle.layers(), kind="lora"), strength),)


class VDiT_LoadDomainAdapter:
    DESCRIPTION = ("Applies a domain adapter: a LoRA on the image attention layers (attn1/attn2) trained on video frames "
                   "so the motion module does not learn the training data's look. Lower scale removes it gradually; "
                   "0 removes it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDIT_MODEL", {"tooltip": "The DiT; it is not changed, a patched copy is returned."}),
            "adapter_name": (_lora_files(detect.DOMAIN_ADAPTER), {"tooltip": "Domain-adapter weights in models/easyanimate or models/loras."}),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                "tooltip": "Inference scale alpha of the adapter; 0 removes it."}),
        }}

    RETURN_TYPES = ("VDIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The DiT with the domain adapter applied at sampling time.",)
    FUNCTION = "apply"
    CATEGORY = "VideoDiT/loaders"

    def apply(self, model, adapter_name, scale=1.0):
        handle = _handle(model)
        if scale == 0:
            return (handle,)
        weights = load_lora(_lora_path(adapter_name), handle.layers(), kind="domain_adapter")
        return (handle.with_lora(weights, scale),)


NODE_CLASS_MAPPINGS = {
    "VDiT_LoadDiT": VDiT_LoadDiT,
    "VDiT_LoadMotionModule": VDiT_LoadMotionModule,
    "VDiT_LoadMotionLoRA": VDiT_LoadMotionLoRA,
    "VDiT_ApplyMotionModule": VDiT_ApplyMotionModule,
    "VDiT_LoadLoRA": VDiT_LoadLoRA,
    "VDiT_LoadDomainAdapter": VDiT_LoadDomainAdapter,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VDiT_LoadDiT": "Load EasyAnimate DiT",
    "VDiT_LoadMotionModule": "Load EasyAnimate Motion Module",
    "VDiT_LoadMotionLoRA": "Load EasyAnimate MotionLoRA",
    "VDiT_ApplyMotionModule": "Apply EasyAnimate Motion Module",
    "VDiT_LoadLoRA": "Load EasyAnimate LoRA",
    "VDiT_LoadDomainAdapter": "Load EasyAnimate Domain Adapter",
}
