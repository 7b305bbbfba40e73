"""Looped cores: configurable weight-tied transformers exposing encode / init_state / step / readout."""

from .config import ARCHS, INIT_STATES, NORMS, ONE_PASS_ARCHS, RECALLS, RESIDUALS, CoreConfig
from .core import Core, FullyLoopedCore, build_core

__all__ = ["ARCHS", "INIT_STATES", "NORMS", "ONE_PASS_ARCHS", "RECALLS", "RESIDUALS", "CoreConfig", "Core",
           "FullyLoopedCore", "build_core"]
