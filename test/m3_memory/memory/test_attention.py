import pytest
import torch

from m3_memory.errors import InputError
from m3_memory.memory.attention import MemoryBank, memory_attention


def bank(t=50, d=24, q_dim=8, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return MemoryBank.create("clip", torch.randn(t, d, generator=g), q_dim, seed=seed, **kw)


def test_output_is_a_convex_combination_of_the_bank():
    b = bank()
    q = torch.randn(6, 5, b.query_dim)
    out = memory_attention(q, b)
    assert out.shape == (6, 5, b.feature_dim)
    # a convex combination lies inside the bank's per-dimension range
    assert torch.all(out <= b.psc.max(0).values + 1e-5) and torch.all(out >= b.psc.min(0).values - 1e-5)


def test_sharp_attention_reads_the_matching_component():
    psc = torch.eye(8)[:5] * torch.tensor([[2.0], [3.0], [1.0], [5.0], [4.0]])  # 5 orthogonal features, d = 8
    b = MemoryBank("m", psc, torch.eye(8), temperature=0.01)  # l = d, W = I: the query is the feature direction
    out = memory_attention(psc[3:4] * 0.1, b)
    torch.testing.assert_close(out, psc[3:4], atol=1e-4, rtol=0)  # raw (un-normalised) row comes back


def test_chunking_does_not_change_the_result():
    b = bank(t=300)
    q = torch.randn(1000, b.query_dim)
    torch.testing.assert_close(memory_attention(q, b, chunk=64), memory_attention(q, b, chunk=5000))


def test_gradients_reach_queries_and_learnable_projection():
    b = bank(learn_projection=True)
    b.W.requires_grad_(True)
    q = torch.randn(10, b.query_dim, requires_grad=True)
    memory_attention(q, b).square().sum().backward()
    assert q.grad.abs().sum() > 0 and b.W.grad.abs().sum() > 0


def literal_attention(q: torch.Tensor, b: MemoryBank) -> torch.Tensor:
    """The paper's formula as written: softmax(normalize(q W) normalize(PSC)^T / T) PSC."""
    proj = torch.nn.functional.normalize(q @ b.W, dim=-1)
    keys = torch.nn.functional.normalize(b.psc, dim=-1)
    return torch.softmax(proj @ keys.T / b.temperature, dim=-1) @ b.psc


@pytest.mark.parametrize("t, d, q_dim", [(50, 24, 8), (300, 768, 16), (5, 8, 12)])
def test_factorised_attention_matches_the_literal_formula_and_its_gradients(t, d, q_dim):
    b = bank(t=t, d=d, q_dim=q_dim)
    q = torch.randn(200, q_dim) * torch.logspace(-3, 1, 200)[:, None]  # tiny to large queries
    torch.testing.assert_close(memory_attention(q, b, chunk=64), literal_attention(q, b), atol=2e-5, rtol=1e-4)
    # the algebra, gradients included, in float64 (float32 rounding differs by ~1e-3 for |q| ~ 1e-3)
    b = MemoryBank(b.name, b.psc.double(), b.W.double().requires_grad_(True), learn_projection=True)
    q = q.double().requires_grad_(True)
    fast = memory_attention(q, b, chunk=64)
    gq, gW = torch.autograd.grad(fast.square().sum(), (q, b.W))
    ref = literal_attention(q, b)
    rq, rW = torch.autograd.grad(ref.square().sum(), (q, b.W))
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(gq, rq)
    torch.testing.assert_close(gW, rW)


def test_bad_shapes_and_values():
    b = bank()
    with pytest.raises(InputError, match="channels"):
        memory_attention(torch.randn(3, b.query_dim + 1), b)
    with pytest.raises(InputError, match="do not match"):
        MemoryBank("m", torch.randn(4, 6), torch.randn(3, 5))
    with pytest.raises(InputError, match="NaN"):
        MemoryBank("m", torch.full((4, 6), float("nan")), torch.randn(3, 6))
