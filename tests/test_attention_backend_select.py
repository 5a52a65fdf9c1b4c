"""Choosing the attention kernel per DiT: load_transformer(attention_backend=...) and the Load DiT
node's appended 'attention' input; motion modules swapped in by a handle follow the DiT."""

import pytest
import torch
from tiny_models import save_dit

import easyanimate_core.models.attention as attn
from easyanimate_core.errors import InputError
from easyanimate_core.models.handle import ModelHandle
from easyanimate_core.models.layers import Attention
from easyanimate_core.models.motion_module import load_motion_module
from easyanimate_core.models.transformer import load_transformer


def _backends(module):
    return {layer.backend for layer in module.modules() if isinstance(layer, Attention)}


def _run(model):
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        return model(torch.randn(1, 4, 3, 4, 4, generator=g), torch.tensor([300]), torch.randn(1, 5, 32, generator=g))


@pytest.fixture(scope="module")
def dit_folder(tmp_path_factory):
    return save_dit(tmp_path_factory.mktemp("backend") / "transformer", in_channels=4)


def test_every_attention_of_the_model_uses_the_chosen_kernel(dit_folder, monkeypatch):
    default = load_transformer(dit_folder)
    assert _backends(default) == {None}  # the process-wide default (SDPA)
    chunked = load_transformer(dit_folder, attention_backend="chunked")
    assert _backends(chunked) == {"chunked"}
    used = []
    kernel = attn._kernel

    def recording(q, k, v, mask, backend):
        used.append(backend)
        return kernel(q, k, v, mask, backend)

    monkeypatch.setattr(attn, "_kernel", recording)
    torch.testing.assert_close(_run(chunked), _run(default), atol=1e-5, rtol=0)
    assert "chunked" in used and "sdpa" in used


def test_chunked_splits_long_attention_exactly(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 4096, 8, generator=g) for _ in range(3))
    calls = []
    kernel = attn._kernel
    monkeypatch.setattr(attn, "_kernel", lambda *a: calls.append(1) or kernel(*a))
    whole = attn.attention(q, k, v, backend="sdpa")
    assert len(calls) == 1
    pieces = attn.attention(q, k, v, backend="chunked")
    assert len(calls) == 1 + 4096 * 4096 // attn.CHUNKED_MAX_ELEMENTS
    torch.testing.assert_close(pieces, whole, atol=1e-6, rtol=0)


def test_swapped_in_motion_modules_follow_the_dit(dit_folder):
    model = load_transformer(dit_folder, attention_backend="chunked")
    motion = load_motion_module(dit_folder)
    with ModelHandle(model).with_motion(motion).patched() as patched:
        assert _backends(patched) == {"chunked"}
        assert all(_backends(block.attn_temporal) == {"chunked"} for block in patched.transformer_blocks)


def test_bad_choices_are_refused_before_loading(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown attention backend 'flash3000'; choose one of sdpa, xformers"):
        load_transformer(tmp_path / "absent", attention_backend="flash3000")
    monkeypatch.setattr(attn, "xformers_available", lambda: False)  # checked the same where xformers is installed
    with pytest.raises(InputError, match="xformers is not installed; pip install xformers or use 'sdpa'"):
        load_transformer(tmp_path / "absent", attention_backend="xformers")


def test_load_dit_node_appends_the_input(pack, dit_folder, monkeypatch):
    nodes = pack.nodes.dit_nodes
    monkeypatch.setenv("VDIT_MODELS_DIR", str(dit_folder.parent))
    inputs = nodes.VDiT_LoadDiT.INPUT_TYPES()
    # appended after the saved widgets, and optional: API prompts saved before it still validate
    assert list(inputs["required"]) == ["dit_name", "weight_dtype", "config_preset"]
    attention = inputs["optional"]["attention"]
    assert attention[0] == ("sdpa", "xformers", "chunked") and attention[1]["default"] == "sdpa"
    (handle,) = nodes.VDiT_LoadDiT().load("transformer", "fp32", "auto", "chunked")
    assert _backends(handle.model) == {"chunked"}
    (saved,) = nodes.VDiT_LoadDiT().load("transformer", "fp32", "auto")  # a workflow saved before the input
    assert _backends(saved.model) == {"sdpa"}
    with pytest.raises(InputError, match="unknown attention 'math'"):
        nodes.VDiT_LoadDiT().load("transformer", "fp32", "auto", "math")
