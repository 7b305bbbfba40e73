"""Looped cores: configurable weight-tied transformers exposing encode / init_state / step / readout."""

from typing import Any

from .config import ARCHS, INIT_STATES, NORMS, ONE_PASS_ARCHS, RECALLS, RESIDUALS, CoreConfig

# The modules load on first use: the config is plain Python, so a command line can read and
# validate a CoreConfig without importing torch (seconds) first.
_MODEL_NAMES = ("Core", "FullyLoopedCore", "LoopNormCore", "build_core")


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from . import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ARCHS", "INIT_STATES", "NORMS", "ONE_PASS_ARCHS", "RECALLS", "RESIDUALS", "CoreConfig", "Core",
           "FullyLoopedCore", "LoopNormCore", "build_core"]
