"""The learning-rate schedule: linear warm-up, then constant, exponential, step or plateau decay.

The learning rate at step s is lr · ramp(s) · decay(s − warmup) · plateau, with

- ramp(s) = min(1, (s + 1)/warmup) (1 without warm-up);
- decay(t) = 1 (constant, plateau), γ^(t/100) (exponential: γ per 100 steps), γ^⌊t/step_size⌋ (step);
- plateau: a factor multiplied by γ after more than ``patience`` validations without improvement (1 otherwise).

It is one ``LambdaLR`` whose lambda reads the plateau factor; a checkpoint stores the ``LambdaLR`` state under
``scheduler`` and the plateau state ``{best, bad, factor}`` under ``plateau``.
"""

from __future__ import annotations

from typing import Any

import torch

from augkd.train.config import OptimConfig


class LearningRateSchedule:
    """Warm-up and decay of ``optimizer``'s learning rate; ``step()`` after every optimizer step,
    ``after_validation(better)`` after every validation (plateau)."""

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimConfig):
        self.optim = optim
        self.plateau: dict[str, Any] = {"best": None, "bad": 0, "factor": 1.0}
        warmup = max(0, int(optim.warmup_steps))
        kind, gamma = optim.scheduler, optim.gamma
        if kind == "exponential":
            decay = lambda step: gamma ** (step / 100.0)  # noqa: E731
        elif kind == "step":
            decay = lambda step: gamma ** (step // optim.step_size)  # noqa: E731
        else:  # constant, and plateau (its reductions are applied on validation, on top of this)
            decay = lambda step: 1.0  # noqa: E731
        plateau = self.plateau

        def factor(step: int) -> float:  # a plain function: LambdaLR then stores no state of its own for it
            ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
            return ramp * decay(max(0, step - warmup)) * plateau["factor"]

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step(self) -> None:
        self.scheduler.step()

    def after_validation(self, better: bool) -> None:
        """Plateau: count validations without improvement; past ``patience`` of them, multiply the factor by γ."""
        if self.optim.scheduler != "plateau":
            return
        if better:
            self.plateau["bad"] = 0
        else:
            self.plateau["bad"] += 1
            if self.plateau["bad"] > self.optim.patience:
                self.plateau["factor"] *= self.optim.gamma
                self.plateau["bad"] = 0

    def share_plateau_factor(self, device: torch.device) -> None:
        """Under DDP only rank 0 validates: every rank takes its plateau factor."""
        if self.optim.scheduler != "plateau":
            return
        factor = torch.tensor([self.plateau["factor"]], device=device)
        torch.distributed.broadcast(factor, src=0)
        self.plateau["factor"] = float(factor)

    def state_dict(self) -> dict[str, Any]:
        """``{"scheduler": LambdaLR state, "plateau": {best, bad, factor}}`` (the checkpoint's two keys)."""
        return {"scheduler": self.scheduler.state_dict(), "plateau": dict(self.plateau)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.plateau.update(state["plateau"])
