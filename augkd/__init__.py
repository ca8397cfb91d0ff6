"""augkd: knowledge distillation for machine-learned interatomic potentials."""

__version__ = "0.1.0"
