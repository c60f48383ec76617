"""Points sampled on the synthetic scene's meshes (the grasp tests' and benches' scene points)."""

from __future__ import annotations

import numpy as np


def sample_surface(parts, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Points [N, 3] uniformly on the meshes of ``parts``, about one per spacing^2 of area."""
    out = []
    for part in parts:
        v, f = np.asarray(part.mesh.vertices), np.asarray(part.mesh.triangles)
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        area = np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2
        n = max(int(area.sum() / spacing**2), 10)
        k = rng.choice(len(f), n, p=area / area.sum())
        s, r = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
        out.append(a[k] * (1 - s) + b[k] * (s * (1 - r)) + c[k] * (s * r))
    return np.concatenate(out)
