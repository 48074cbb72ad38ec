"""What the loss tests share: gradients of a function, a relative error, and a watch on tensor sizes."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def value_and_grads(objective, *inputs):
    """objective(*inputs) and its gradient with respect to every input."""
    inputs = [x.clone().requires_grad_() for x in inputs]
    value = objective(*inputs)
    value.backward()
    return value.detach(), [x.grad for x in inputs]


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the largest reference entry (reference in float64)."""
    return ((value.double() - reference).abs().max() / reference.abs().max()).item()


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out
