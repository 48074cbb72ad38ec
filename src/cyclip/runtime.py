"""Where and how a process computes: the device, autocast, seeding and the state of the random generators.

Training, evaluation and the demo all need these, and none of them should have to import the trainer
to get them.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from cyclip import distributed

DEVICE_TYPES = ("cpu", "cuda", "mps")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def available_devices() -> list[str]:
    """The device names this machine can run on: cpu, then cuda:0..N-1, then mps when present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_device(name: str) -> torch.device:
    """`auto` = CUDA when there is a GPU; under torchrun each process takes the GPU of its LOCAL_RANK.

    A name this machine cannot run on (a typo, CUDA without a GPU, an index past the last GPU, MPS off a
    Mac) is one ValueError that lists what is available.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    available = f"available here: {', '.join(available_devices())}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps ({available})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; {available}")
        if device.index is None:
            device = torch.device("cuda", distributed.local_rank() if distributed.launched_by_torchrun() else 0)
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), so there is no "
                f"cuda:{device.index}; {available}"
            )
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"--device {name}: MPS (Apple GPU) is not available on this machine; {available}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` = bf16 autocast on a CUDA device with native bf16 (Ampere or later; no loss scaling needed),
    fp32 elsewhere, including GPUs that would only emulate bf16; any other precision as given."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    with torch.cuda.device(device):
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16 / fp16 on `device` for those precisions; nothing for fp32."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (model initialisation draws from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The state of every global generator this process draws from (CPU, and `device`'s when it is a GPU),
    in tensors and plain containers (a weights-only checkpoint can hold it)."""
    numpy_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]  # legacy: a tuple
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what `rng_state` returned, so that a resumed run draws the numbers the original would have."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    cuda = state.get("cuda")
    if device is not None and device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)
