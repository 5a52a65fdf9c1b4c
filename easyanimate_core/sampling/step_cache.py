"""Step caching: skip most of the DiT on sampling steps where its input barely changed.

First-Block-Cache style (the idea of ParaAttention's FBCache / diffusers' ``FirstBlockCache``,
related to TeaCache): every DiT call runs its first block; the change of that block's residual
(output minus input) since the last call that ran the whole model is the signal. Below
``threshold`` the remaining blocks are skipped and the residual they added last time (the output
of the last block minus the output of the first, i.e. the whole skipped part: motion modules and
U-ViT long skips included) is added to the first block's output instead.

Signal: ``mean|r - r_ref| / mean|r_ref|`` per batch item, the largest over the batch, where ``r`` is
the first block's residual now and ``r_ref`` the one of the last full call. Under classifier-free
guidance the batch is ``[uncond, cond]``, so one decision covers both branches and each branch
reuses its own cached residual.

Rules that keep quality: the first and the last sampling step always run the full model; at most
``max_consecutive`` calls in a row reuse a residual; the reference is only moved on full calls, so
small changes add up until they cross the threshold. Every (window, conditioning) the pipeline
calls the DiT with has its own state (``key``): context windows see different frames, and the
CLIP-image switch changes the conditioning. ``threshold`` 0 never skips and is bit-identical to
running without a cache.

Memory: two activation-sized tensors (B x tokens x hidden) per key.

Use: ``cache = StepCache(0.4)``; sample with ``SamplingOptions(..., step_cache=cache)``;
afterwards ``cache.skipped`` of ``cache.calls`` DiT calls were skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from ..errors import InputError

DEFAULT_THRESHOLD = 0.4  # the bare ``--step-cache`` flag; see docs/step_cache.md for the trade-off
DEFAULT_MAX_CONSECUTIVE = 2


@dataclass
class _KeyState:
    reference: torch.Tensor | None = None  # first block's residual at the last full call
    residual: torch.Tensor | None = None   # what the skipped blocks added at the last full call
    consecutive: int = 0                   # reuses since that full call


@dataclass
class StepCache:
    """Options and per-run state of the step cache (see the module docstring)."""

    threshold: float = DEFAULT_THRESHOLD
    max_consecutive: int = DEFAULT_MAX_CONSECUTIVE
    steps: int = field(default=0, init=False)  # steps of the current run (set by :meth:`begin`)
    calls: int = field(default=0, init=False)  # DiT calls seen, over every run
    skipped_steps: list = field(default_factory=list, init=False)  # (step, key) of every reuse, every run
    _states: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not self.threshold >= 0:
            raise InputError(f"step cache threshold must be 0 or more (0 never skips), got {self.threshold}; "
                             f"try {DEFAULT_THRESHOLD}")
        if int(self.max_consecutive) != self.max_consecutive or self.max_consecutive < 1:
            raise InputError(f"step cache max_consecutive must be a whole number of at least 1, got "
                             f"{self.max_consecutive}; try {DEFAULT_MAX_CONSECUTIVE}")

    @property
    def skipped(self) -> int:
        return len(self.skipped_steps)

    def begin(self, steps: int) -> StepCache:
        """Start a sampling run of ``steps`` steps: forget every cached residual. The counts add up
        over runs (the chunks of a long video); a fresh cache counts one run."""
        self.steps, self._states = int(steps), {}
        return self

    def end(self) -> None:
        """Drop the cached residuals (activation-sized, on the DiT's device) once a run is over;
        the counts stay for :meth:`summary`."""
        self._states = {}

    def at(self, step: int, key: Hashable = None) -> StepCacheCall:
        """The handle the DiT's forward takes for one call at sampling step ``step`` (0-based)."""
        return StepCacheCall(self, int(step), key)

    def summary(self) -> str:
        return f"step cache: {self.skipped} of {self.calls} DiT calls skipped (threshold {self.threshold:g})"


def relative_change(now: torch.Tensor, before: torch.Tensor) -> float:
    """``mean|now - before| / mean|before|`` per batch item (dim 0), the largest of them."""
    dims = tuple(range(1, now.ndim))
    change = (now - before).abs().float().mean(dims)
    scale = before.abs().float().mean(dims).clamp_min(1e-12)
    return float((change / scale).max())


@dataclass
class StepCacheCall:
    """One DiT call's view of a :class:`StepCache`: the step and the pipeline's key."""

    cache: StepCache
    step: int
    key: Hashable

    def run(self, first_in: torch.Tensor, first_out: torch.Tensor,
            rest: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The blocks' output: ``rest(first_out)`` (the blocks after the first) or, when the first
        block's residual ``first_out - first_in`` barely changed, ``first_out`` plus the cached
        residual of the rest."""
        cache = self.cache
        cache.calls += 1
        state = cache._states.setdefault(self.key, _KeyState())
        signal = first_out - first_in
        if self._may_reuse(state, signal) and relative_change(signal, state.reference) < cache.threshold:
            state.consecutive += 1
            cache.skipped_steps.append((self.step, self.key))
            return first_out + state.residual
        out = rest(first_out)
        state.reference, state.residual, state.consecutive = signal, out - first_out, 0
        return out

    def _may_reuse(self, state: _KeyState, signal: torch.Tensor) -> bool:
        cache = self.cache
        return (cache.threshold > 0 and 0 < self.step < cache.steps - 1
                and state.residual is not None and state.reference.shape == signal.shape
                and state.consecutive < cache.max_consecutive)
