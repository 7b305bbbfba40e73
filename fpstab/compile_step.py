"""Whether a run compiles its loop step, and a compiled step that falls back to eager.

`choose_compile` resolves the training runtime's `compile` option: True or False as given, or, when it is
None ("auto"), compiled only where compiling was measured to pay: a CPU run of at least
`AUTO_MIN_STEPS` optimizer steps on a machine with a working C++ compiler (inductor's CPU kernels
are C++). Measured on a 2-core CPU (results/train_speed/README.md): the tiny prefix-sum preset
(1,250 steps) trained in 0.86-0.87 of the eager time with compilation included, and compiling
cost ~16 s of CPU against ~35 ms saved per step, so it breaks even near 460 steps. On a GPU the
gain is not measured yet, so auto stays eager there. `choose_eval_compile` makes the choice for
`fpstab eval`, where compiling did not pay on a CPU, so auto is eager there.

`FallbackStep` calls the compiled step and, if the compiler fails (a `TorchDynamoException`:
no C++ compiler, an inductor bug), runs the step eagerly from then on and reports why once.
An error of the step itself still raises: the eager call that follows raises it, as it would
uncompiled. Only the forward's compilation is guarded; a failure while compiling the backward
graph (at the first `backward()`) propagates.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

AUTO_MIN_STEPS = 1000  # CPU runs this long repay compiling (break-even ~460 steps, measured)


@dataclass(frozen=True)
class CompileChoice:
    """compile: whether the run compiles its step; reason: why, as the run's log and config.json say it."""

    compile: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"compile": self.compile, "reason": self.reason}


def choose_compile(requested: bool | None, device_type: str, total_steps: int) -> CompileChoice:
    """Resolve the `compile` option: `requested` True / False wins; None is auto (module docstring)."""
    if requested is not None:
        return _given(requested)
    if device_type != "cpu":
        return CompileChoice(False, f"auto: compiling is not measured on {device_type} yet (pass --compile to try)")
    if total_steps < AUTO_MIN_STEPS:
        return CompileChoice(False, f"auto: {total_steps} steps are fewer than the {AUTO_MIN_STEPS} "
                                    "that repay compiling on a CPU")
    problem = cxx_compiler_problem()
    if problem is not None:
        return CompileChoice(False, f"auto: {problem}")
    return CompileChoice(True, f"auto: a CPU run of {total_steps} >= {AUTO_MIN_STEPS} steps")


def choose_eval_compile(requested: bool | None, device_type: str) -> CompileChoice:
    """Whether `fpstab eval` compiles each level's iteration and its solver's step: `requested` wins;
    None (auto) is eager. Measured on a 2-core CPU (results/train_speed/README.md), a compiled
    evaluation at 256 and 512 tokens, d 128, took 0.96-1.05 of the eager wall time end to end
    (3 pairs), although the iteration alone ran in 0.73-0.77 of eager's time in a loop of its own."""
    if requested is not None:
        return _given(requested)
    return CompileChoice(False, f"auto: eager (compiled evaluation measured no faster on a CPU, "
                                f"not measured on a GPU; on {device_type} pass --compile to try)")


def _given(requested: bool) -> CompileChoice:
    return CompileChoice(requested, "--compile given" if requested else "--no-compile given")


def cxx_compiler_problem() -> str | None:
    """None when inductor finds a working C++ compiler, else what is missing."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a torch without this helper: look for the usual names
        found = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        return None if found else "no C++ compiler (c++, g++, clang++) on PATH for inductor's CPU kernels"
    try:
        get_cpp_compiler()
    except Exception as err:  # InvalidCxxCompiler and whatever the search itself raises
        return f"no working C++ compiler for inductor's CPU kernels ({type(err).__name__}: {_first_line(err)})"
    return None


class FallbackStep:
    """A compiled function (a loop step h' = fn(h, u), or one evaluation iteration) that turns eager
    for good when compiling fails.

    Called with `fn`'s arguments, e.g. h: (B, n_tokens, d_model) and u, the step's second argument.
    `compiled` defaults to torch.compile(fn). `on_fallback(message)` is called once, when the
    fallback happens (the run records it); set it after construction if the recorder exists only
    later. `__wrapped__` is `fn`, so wrappers can be seen through.
    """

    def __init__(self, fn: Callable[..., Any], compiled: Callable[..., Any] | None = None,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        self.__wrapped__ = fn
        self.compiled = torch.compile(fn) if compiled is None else compiled
        self.on_fallback = on_fallback
        self.fallback: str | None = None  # why the step runs eagerly, once it does

    def __call__(self, *args: Any) -> Any:
        if self.fallback is not None:
            return self.__wrapped__(*args)
        try:
            return self.compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as err:
            out = self.__wrapped__(*args)  # an error of the function itself raises here, before any fallback
            self._fall_back(err)
            return out

    def _fall_back(self, err: BaseException) -> None:
        self.fallback = f"torch.compile failed, running the step eagerly: {type(err).__name__}: {_first_line(err)}"
        if self.on_fallback is not None:
            self.on_fallback(self.fallback)


def find_fallback_step(step_fn: Any) -> FallbackStep | None:
    """The FallbackStep inside `step_fn` (itself or under `__wrapped__` wrappers), or None."""
    fn = step_fn
    for _ in range(4):
        if isinstance(fn, FallbackStep):
            return fn
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return None
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""
