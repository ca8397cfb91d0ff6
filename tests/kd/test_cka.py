"""Linear CKA: invariances, identity, independence, Gram-form agreement, heat map."""

import numpy as np
import pytest
import torch

from augkd.kd.cka import cka_matrix, cka_table, linear_cka, plot_cka


def gram_cka(x, y):
    """Reference: HSIC form with N×N Gram matrices."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l).sum() / (torch.linalg.norm(k) * torch.linalg.norm(l)))


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g, dtype=torch.float64)
    w = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = x @ w + 0.5 * torch.randn(200, 8, generator=g, dtype=torch.float64)
    return x, y


def test_identity_and_gram_form(feats):
    x, y = feats
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(gram_cka(x, y), rel=1e-9)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))


def test_invariant_to_orthogonal_transforms_scaling_and_offsets(feats):
    x, y = feats
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(37.0 * x + 5.0, 1e-4 * y) == pytest.approx(base, rel=1e-9)
    # large-magnitude features stay finite and exact in float32 input
    assert linear_cka((1e6 * x).float(), (1e6 * x).float()) == pytest.approx(1.0, rel=1e-5)


def test_independent_features_small():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    assert linear_cka(a, b) < 0.05
    assert linear_cka(a, torch.zeros(2000, 4)) == 0.0


def test_matrix_table_and_png(tmp_path, feats):
    x, y = feats
    a = {"U1": x, "U2": y, "vec": torch.randn(200, 3, 4)}
    b = {"h1": y, "h2": x}
    m = cka_matrix(a, b)
    assert m.shape == (3, 2)
    assert m[0, 1] == pytest.approx(1.0) and m[1, 0] == pytest.approx(1.0)
    assert "U2" in cka_table(m, list(a), list(b))
    path = plot_cka(m, list(a), list(b), tmp_path / "cka" / "heat.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="same atoms"):
        linear_cka(np.zeros((3, 2)), np.zeros((4, 2)))
