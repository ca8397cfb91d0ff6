"""The distilled student as a product: export (``export``), neighbour lists with a Verlet skin (``neighbors``),
the inputs of relax and md (``inputs``), relaxations (``relax``), molecular dynamics (``md``) and the
stability checks MD runs every step (``stability``). The ASE calculator itself is ``augkd.calculator``.
"""
