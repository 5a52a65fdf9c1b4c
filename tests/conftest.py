"""Shared test setup: one torch thread (tiny-model timings and results are stable only then),
the pack imported the way ComfyUI imports it, and a fresh seed per test."""

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "vdit_pack"

torch.set_num_threads(1)


class _CoreAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Make ``vdit_pack.easyanimate_core.*`` the very same modules as the installed
    ``easyanimate_core.*``, so objects built by tests pass the nodes' isinstance checks."""

    prefix = PACK_MODULE + ".easyanimate_core"

    def find_spec(self, name, path=None, target=None):
        if name == self.prefix or name.startswith(self.prefix + "."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(spec.name[len(PACK_MODULE) + 1:])

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _CoreAlias())


def import_pack():
    """Import the repo root as ComfyUI does: by file path, as a package, relative imports inside."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return import_pack()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
