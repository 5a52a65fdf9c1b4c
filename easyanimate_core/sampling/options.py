"""The options of one sampling run, checked once where they enter the pipeline.

The CLI, the sampler node and the Python API all build one :class:`SamplingOptions`, so every
entry gets the same defaults (the v3 release's) and the same one-line errors for values that
would otherwise turn into NaN video after minutes of work (``cfg nan``, ``strength 2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from .context import ContextWindows
from .schedule import KARRAS_SAMPLERS, SAMPLERS
from .step_cache import StepCache

MAX_CFG = 100.0
MAX_STEPS = 1000


def _finite(name: str, value, low: float, high: float, fix: str) -> float:
    """``value`` as a float when it is a finite number in [low, high]; else a one-line error."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}; {fix}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{name} must be a finite number from {low:g} to {high:g}, got {value!r}; {fix}")
    return number


@dataclass(frozen=True)
class SamplingOptions:
    """How to sample. ``interrupt`` is called between the DiT's blocks (and VAE windows in
    :func:`~.pipeline.generate`) and raises to cancel, so a cancel lands within one block."""

    steps: int = 25
    cfg: float = 7.0                 # classifier-free guidance scale; <= 1 runs no negative branch
    sampler: str = "dpmpp_2m"
    karras: bool = False
    seed: int = 43                   # CPU generator seed of the noise (same video on every device)
    strength: float = 1.0            # < 1: video-to-video, only the last steps * strength steps run
    clip_apply_ratio: float = 0.5    # InP models see the CLIP image in this last share of the steps
    guidance_rescale: float = 0.0    # Lin et al. 2023; 0 = off (the reference)
    context: ContextWindows | None = None
    interrupt: Callable[[], None] | None = None
    step_cache: StepCache | None = None  # skip most of the DiT on steps whose input barely changed

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {self.steps!r}; "
                             f"25 is the release default")
        # stored as the floats they were checked as, so a "7" from a config file works like 7.0
        checked = {
            "cfg": _finite("cfg", self.cfg, 0.0, MAX_CFG, "use e.g. 7 (1 or less turns guidance off)"),
            "strength": _finite("strength", self.strength, 0.0, 1.0,
                                "use 1.0 for text-to-video, below 1 for video-to-video (lower keeps more of the input)"),
            "guidance_rescale": _finite("guidance_rescale", self.guidance_rescale, 0.0, 1.0,
                                        "0 turns it off, 0.7 is typical"),
            "clip_apply_ratio": _finite("clip_apply_ratio", self.clip_apply_ratio, 0.0, 1.0,
                                        "0.5 is the release default"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if int(self.steps * self.strength) < 1:
            raise InputError(f"strength {self.strength:g} of {self.steps} steps would run no step; use a higher "
                             f"strength or more steps (1.0 for text-to-video)")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler {self.sampler!r} is unknown; choose one of {', '.join(SAMPLERS)}")
        if self.karras and self.sampler not in KARRAS_SAMPLERS:
            raise InputError(f"karras sigmas are not available for sampler {self.sampler!r}; use them with "
                             f"{', '.join(KARRAS_SAMPLERS)} or turn karras off")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 64:
            raise InputError(f"seed must be a whole number from 0 to 2**64 - 1, got {self.seed!r}; use e.g. 43")
        if self.context is not None and not isinstance(self.context, ContextWindows):
            raise InputError(f"context must be a ContextWindows (or None), got {type(self.context).__name__}; "
                             f"build it with ContextWindows(length, overlap)")
        if self.interrupt is not None and not callable(self.interrupt):
            raise InputError(f"interrupt must be a callable that raises to cancel, got "
                             f"{type(self.interrupt).__name__}; pass a function or None")
        if self.step_cache is not None and not isinstance(self.step_cache, StepCache):
            raise InputError(f"step_cache must be a StepCache (or None), got {type(self.step_cache).__name__}; "
                             f"build it with StepCache(threshold)")
