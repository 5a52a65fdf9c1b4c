"""ModelHandle: a DiT plus the patches to apply while it samples (the VDIT_MODEL node type).

Graph nodes never change a loaded transformer: each node returns a new handle that shares the
base module and lists its patches (motion modules, LoRAs, motion scale). Two branches of a graph
therefore never see each other's patches; the patches exist on the module only inside
:meth:`ModelHandle.patched`.

API (what the sampler and the training code use):

    handle = ModelHandle(transformer)                    # no patches
    handle.with_motion(motion_set, motion_loras=(), motion_scale=1.0) -> ModelHandle
    handle.with_lora(lora_weights, strength)           -> ModelHandle (stacked after earlier ones)
    handle.layers()                                     -> {name: Linear} as the model will be while
                                                          patched (resolve LoRA files against this)
    with handle.patched() as model:                     # apply everything; exact restore on exit
        host.load_models([model])                        # move/offload inside: swapped-in motion
        out = model(...)                                 #   modules then travel with the model

``patched`` swaps the handle's motion modules into the blocks (the cached modules of the
:class:`MotionModuleSet`, moved to the model's device and dtype), sets ``motion_scale`` on every
motion module, then applies motion LoRAs and LoRAs (merged into the weights, see
:mod:`.lora`). On exit everything is undone in reverse order and the base module is bit-for-bit
what it was. Patching is not re-entrant: one ``patched`` block per base module at a time.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

from ..errors import InputError
from .layers import attention_backend, set_attention_backend
from .lora import LoraWeights, apply_loras, linear_layers
from .motion_module import MotionModuleSet
from .transformer import VideoTransformer


@dataclass(frozen=True, eq=False)
class ModelHandle:
    model: VideoTransformer
    motion: MotionModuleSet | None = None
    motion_loras: tuple = ()  # ((LoraWeights, strength), ...) resolved against the motion modules
    loras: tuple = ()  # ((LoraWeights, strength), ...) LoRAs and domain adapters, in order
    motion_scale: float = 1.0

    # ----- building (never mutates) -------------------------------------------------------------
    def with_motion(self, motion: MotionModuleSet, motion_loras=(), motion_scale: float = 1.0) -> ModelHandle:
        model = self.model
        if motion.hidden_size != model.hidden_size or motion.depth != model.depth:
            raise InputError(f"{motion.source} has hidden size {motion.hidden_size} and {motion.depth} blocks but the "
                             f"DiT has hidden size {model.hidden_size} and {model.depth} blocks; use a motion module "
                             f"trained for this DiT.")
        return replace(self, motion=motion, motion_loras=tuple(motion_loras), motion_scale=float(motion_scale))

    def with_lora(self, weights: LoraWeights, strength: float) -> ModelHandle:
        return replace(self, loras=self.loras + ((weights, float(strength)),))

    def with_motion_scale(self, motion_scale: float) -> ModelHandle:
        return replace(self, motion_scale=float(motion_scale))

    # ----- what the model looks like while patched ---------------------------------------------
    def motion_layers(self) -> dict:
        """{name: Linear} of the motion modules that will run (the handle's, else the model's own)."""
        if self.motion is not None:
            modules = self.motion.build()
            return {f"transformer_blocks.{i}.attn_temporal.{name}": layer
                    for i, module in enumerate(modules) for name, layer in linear_layers(module).items()}
        return {n: layer for n, layer in linear_layers(self.model).items() if ".attn_temporal." in n}

    def layers(self) -> dict:
        base = {n: layer for n, layer in linear_layers(self.model).items() if ".attn_temporal." not in n}
        return {**base, **self.motion_layers()}

    @property
    def has_motion_modules(self) -> bool:
        return self.motion is not None or self.model.has_motion_modules

    # ----- sampling ----------------------------------------------------------------------------
    @contextmanager
    def patched(self):
        model = self.model
        blocks = model.transformer_blocks
        swapped, scales, applied = [], [], None
        try:
            if self.motion is not None:
                modules = self.motion.build()
                # the compute dtype, also for fp8-stored models: motion modules are never stored in fp8
                modules.to(device=model.device, dtype=model.dtype)
                set_attention_backend(modules, attention_backend(model))  # the modules are shared
                for block, module in zip(blocks, modules):
                    swapped.append((block, block.attn_temporal))
                    block.attn_temporal = module
            for block in blocks:
                if block.attn_temporal is not None:
                    scales.append((block.attn_temporal, block.attn_temporal.motion_scale))
                    block.attn_temporal.motion_scale = self.motion_scale
            applied = apply_loras(self.layers(), self.motion_loras + self.loras)
            yield model
        finally:
            if applied is not None:
                applied.remove()
            for module, scale in scales:
                module.motion_scale = scale
            for block, original in reversed(swapped):
                block.attn_temporal = original
