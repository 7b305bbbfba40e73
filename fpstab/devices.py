"""The --device option: one check for every command (before torch is imported) and its resolution."""

from __future__ import annotations

import re
from typing import Any

DEVICE_FORMS = "cpu, cuda or cuda:N"


def check_device_name(name: str, option: str = "--device") -> str:
    """`name` if it is cpu, cuda or cuda:N; else ValueError naming the option and the allowed forms."""
    if not isinstance(name, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise ValueError(f"{option} {name!r}: allowed: {DEVICE_FORMS}")
    return name


def resolve_device(name: str, option: str = "--device") -> Any:
    """The torch.device for `name`; ValueError when it names a CUDA device torch cannot see."""
    import torch

    check_device_name(name, option)
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: torch sees no CUDA device here; use {option} cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def default_device() -> str:
    """The commands' --device when none is given: 'cuda' when torch sees a CUDA device, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
