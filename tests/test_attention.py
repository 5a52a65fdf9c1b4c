import pytest
import torch

from easyanimate_core.models import attention as attn


def _qkv(b=2, h=3, nq=17, nk=11, d=8):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(b, h, nq, d, generator=g), torch.randn(b, h, nk, d, generator=g),
            torch.randn(b, h, nk, d, generator=g))


def test_sdpa_matches_explicit_softmax():
    q, k, v = _qkv()
    torch.testing.assert_close(attn.attention(q, k, v), attn.attention(q, k, v, backend="math"),
                               atol=1e-5, rtol=1e-5)


def test_boolean_mask_drops_keys_exactly():
    q, k, v = _qkv()
    keep = torch.ones(2, 1, 1, 11, dtype=torch.bool)
    keep[:, :, :, 7:] = False
    masked = attn.attention(q, k, v, mask=keep)
    truncated = attn.attention(q, k[:, :, :7], v[:, :, :7])
    torch.testing.assert_close(masked, truncated, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("max_elements", [1, 50, 11 * 3 * 5])
def test_batch_and_query_chunking_is_exact(max_elements):
    q, k, v = _qkv(b=5)
    keep = torch.rand(5, 1, 17, 11, generator=torch.Generator().manual_seed(2)) > 0.3
    keep[..., 0] = True
    whole = attn.attention(q, k, v, mask=keep, backend="math")
    chunked = attn.attention(q, k, v, mask=keep, backend="math", max_elements=max_elements)
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention backend"):
        attn.set_backend("flash3000")


def test_xformers_request_without_xformers_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(attn, "xformers_available", lambda: False)  # as on a machine without it
    with pytest.raises(ValueError, match="pip install xformers"):
        attn.set_backend("xformers")
