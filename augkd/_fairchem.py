"""Import fairchem without its CPU-only noise.

fairchem imports nvalchemiops, whose warp backend prints a CUDA-driver warning from C on machines without a GPU;
Python warning filters cannot stop it. Without a GPU the package brings nothing (only graph version 3 uses it), so
we hide it there and keep it where a GPU could use it.
"""

from __future__ import annotations

import logging
import sys


def quiet_fairchem() -> None:
    if "nvalchemiops" not in sys.modules:
        import torch

        if not torch.cuda.is_available():
            sys.modules["nvalchemiops"] = None  # type: ignore[assignment]  # fairchem catches the ImportError
    for name in ("fairchem", "fairchem.core", "fairchem.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
