import pytest
import torch

from m3_memory.render.sh import C0, C1, sh_basis, sh_degree_of, sh_to_rgb


def test_degree_zero_and_first_band():
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])
    dc = torch.full((2, 3), 0.3)
    rest = torch.zeros(2, 15, 3)
    torch.testing.assert_close(sh_to_rgb(dc, rest, means, torch.zeros(3)), torch.full((2, 3), 0.5 + C0 * 0.3))
    rest[:, 1] = 0.2  # the band-1 coefficient of z
    rgb = sh_to_rgb(dc, rest, means, torch.zeros(3))
    torch.testing.assert_close(rgb[0], torch.full((3,), 0.5 + C0 * 0.3 + C1 * 0.2))  # seen along +z
    torch.testing.assert_close(rgb[1], torch.full((3,), 0.5 + C0 * 0.3 - C1 * 0.2))  # seen along -z
    torch.testing.assert_close(sh_to_rgb(dc, rest, means, torch.zeros(3), degree=0), torch.full((2, 3), 0.5 + C0 * 0.3))


def test_basis_is_orthonormal_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(200_000, 3, generator=g), dim=-1)
    B = sh_basis(d, 3)  # [M, 16]
    gram = 4 * torch.pi * B.T @ B / d.shape[0]  # Monte-Carlo integral over the sphere
    torch.testing.assert_close(gram, torch.eye(16), atol=0.03, rtol=0)


def test_bad_layout():
    with pytest.raises(ValueError):
        sh_degree_of(5)
