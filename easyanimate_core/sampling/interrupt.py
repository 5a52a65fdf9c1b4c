"""Cancel inside a sampling step.

A step of a large video DiT takes seconds to minutes, so checking for cancel once per step is not
enough. For the duration of a run, forward pre-hooks on the DiT's transformer blocks call the
caller's ``interrupt`` before every block; it raises to cancel (ComfyUI's interrupt exception in
the nodes, :class:`~easyanimate_core.progress.Interrupted` or anything else in the core), so the
run stops within one block whatever the model's size. The hooks leave the model's own code alone
and are removed when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def checked_modules(transformer: torch.nn.Module) -> list:
    """The modules before which ``interrupt`` runs: the DiT's blocks, or the model itself when it
    has none (a foreign eps model)."""
    blocks = getattr(transformer, "transformer_blocks", None)
    return list(blocks) if blocks is not None else [transformer]


@contextlib.contextmanager
def interrupt_between_blocks(transformer: torch.nn.Module, interrupt: Callable[[], None] | None):
    """Call ``interrupt()`` before every block of ``transformer`` while the block runs; a no-op
    for ``interrupt=None``."""
    if interrupt is None:
        yield
        return
    handles = [module.register_forward_pre_hook(lambda module, args: interrupt())
               for module in checked_modules(transformer)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def with_interrupt(progress, interrupt: Callable[[], None] | None):
    """A progress callable that also checks ``interrupt`` after every unit (VAE windows, steps)."""
    if interrupt is None:
        return progress

    def report(done, total, preview=None):
        interrupt()
        if progress is not None:
            progress(done, total, preview=preview)

    return report
