"""How evaluation runs (device, batch size, data-loading workers): each default written once, here.

`cyclip eval` builds its --device/--batch-size/--workers flags from these fields, a suite file may set
the same keys (flags given on the command line win), and the demo evaluates with them. The layers below
(`Encoder`, `embed_images`, `embed_texts`) take the values as required arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalConfig:
    """The run settings of an evaluation; field names are the suite file's keys and the flags' names."""

    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    batch_size: int = field(default=256, metadata={"help": "images or captions per forward pass"})
    workers: int = field(default=2, metadata={"help": "data-loading processes"})

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name, minimum in (("batch_size", 1), ("workers", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")

    def updated(self, values: Mapping[str, Any]) -> EvalConfig:
        """A copy with the fields in `values` that are not None replaced (later sources win)."""
        return dataclasses.replace(self, **{key: value for key, value in values.items() if value is not None})


EVAL_FIELDS = tuple(item.name for item in dataclasses.fields(EvalConfig))
