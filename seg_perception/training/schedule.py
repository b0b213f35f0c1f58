"""The learning-rate schedule of ``schedule:`` (poly or constant, with linear warmup)."""
from __future__ import annotations


class PolyWithWarmup:
    """LR factor: linear warmup from ``warmup_factor`` to 1, then (1 - t/T)^power.

    A callable object (not a lambda) so LambdaLR stores its settings in the
    checkpoint as plain numbers.
    """

    def __init__(self, total_iterations: int, power: float = 0.9, warmup_iterations: int = 0,
                 warmup_factor: float = 0.1, policy: str = 'poly'):
        self.total_iterations = int(total_iterations)
        self.power = float(power)
        self.warmup_iterations = int(warmup_iterations)
        self.warmup_factor = float(warmup_factor)
        self.policy = policy

    def __call__(self, iteration: int) -> float:
        factor = 1.0
        if self.policy == 'poly':
            progress = min(iteration, self.total_iterations) / max(self.total_iterations, 1)
            factor = (1.0 - progress) ** self.power
        if iteration < self.warmup_iterations:
            alpha = iteration / self.warmup_iterations
            factor *= self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        return factor
