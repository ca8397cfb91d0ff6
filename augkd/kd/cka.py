"""Linear CKA (centred kernel alignment; Kornblith et al. 2019) between layers of two models over the same atoms.

CKA(X, Y) = ||Yᶜᵀ Xᶜ||_F² / (||Xᶜᵀ Xᶜ||_F · ||Yᶜᵀ Yᶜ||_F) with Xᶜ, Yᶜ the column-centred (N, C)
feature matrices: the feature-space form, O(N·C²) memory-light and equal to the Gram (N×N) form. Invariant to orthogonal
transforms and isotropic scaling of either side; 1 for identical representations. Features with more than two
axes (e.g. vectors (N, 3, C)) are flattened to (N, 3·C).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def _matrix(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to(torch.float64).cpu()
    if x.ndim == 1:
        x = x.unsqueeze(1)
    return x.reshape(x.shape[0], -1)


def linear_cka(x, y) -> float:
    """Linear CKA between (N, C_x) and (N, C_y) features of the same N atoms (0 when either is constant)."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs features of the same atoms: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    # Scale each side to unit Frobenius norm first: CKA is scale invariant and this keeps the products in range.
    nx, ny = torch.linalg.norm(x), torch.linalg.norm(y)
    if nx == 0 or ny == 0:
        return 0.0
    x, y = x / nx, y / ny
    cross = torch.linalg.norm(y.T @ x) ** 2
    den = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    return float(cross / den)


def cka_matrix(features_a: Mapping[str, torch.Tensor], features_b: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(len(a), len(b)) matrix of linear CKA between every layer of ``a`` and every layer of ``b`` (dict order)."""
    return np.array([[linear_cka(xa, xb) for xb in features_b.values()] for xa in features_a.values()])


def cka_table(matrix: np.ndarray, labels_a: Sequence[str], labels_b: Sequence[str]) -> str:
    """The matrix as a text table (rows: model A's layers, columns: model B's)."""
    width = max([len(s) for s in labels_a] + [4])
    cols = [max(len(s), 5) for s in labels_b]
    lines = [" " * width + "  " + "  ".join(s.rjust(c) for s, c in zip(labels_b, cols))]
    for label, row in zip(labels_a, matrix):
        lines.append(label.ljust(width) + "  " + "  ".join(f"{v:.3f}".rjust(c) for v, c in zip(row, cols)))
    return "\n".join(lines)


def plot_cka(
    matrix: np.ndarray,
    labels_a: Sequence[str],
    labels_b: Sequence[str],
    path: str | Path,
    title: str | None = None,
    name_a: str = "model A",
    name_b: str = "model B",
) -> Path:
    """Write a PNG heat map of a CKA matrix (values in [0, 1], annotated) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=float)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(labels_b), 1.0 + 0.6 * len(labels_a)))
    try:
        im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower", aspect="auto")
        ax.set_xticks(range(len(labels_b)), labels_b, rotation=45, ha="right")
        ax.set_yticks(range(len(labels_a)), labels_a)
        ax.set_xlabel(name_b)
        ax.set_ylabel(name_a)
        if matrix.size <= 400:
            for i in range(matrix.shape[0]):
                for j in range(matrix.shape[1]):
                    v = matrix[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
        fig.colorbar(im, ax=ax, label="linear CKA")
        ax.set_title(title or "linear CKA")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
