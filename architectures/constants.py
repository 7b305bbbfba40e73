"""A cache for the constant tensors attention rebuilds on every call (position tables, window masks).

A looped core calls its step 30 times per training batch and 500 times per
evaluation batch with the same token layout, so these tables are built once
per key (shape, sizes, dtype, device) and reused. A cached value must be a
plain constant: it is built outside any torch.func transform (a factory
function called inside jvp/grad would return a tensor wrapped at that
transform's level), outside inference mode (an inference tensor cannot be
saved for a later backward) and without autograd history. Under
torch.compile the builder runs inline, so the compiler sees ordinary ops
instead of a Python cache.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

MAX_ENTRIES = 64  # per builder; distinct layouts are few (one per ladder level)


@contextlib.contextmanager
def plain_tensor_mode() -> Iterator[None]:
    """Tensors created inside are ordinary: no functorch wrapper, not inference tensors, no grad."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.no_grad())
        disable_functorch = getattr(torch._C, "_DisableFuncTorch", None)
        if disable_functorch is not None:
            stack.enter_context(disable_functorch())
        yield


def _is_plain(value: Any) -> bool:
    tensors = value if isinstance(value, tuple) else (value,)
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda t: False)
    return all(not (t.requires_grad or t.is_inference() or wrapped(t)) for t in tensors if isinstance(t, torch.Tensor))


def cached_constant(build: F) -> F:
    """Decorator: memoize `build(*hashable_args)` (a tensor or a tuple of tensors) as plain constants.

    The cached tensors are shared between callers: treat them as read-only.
    `build.cache_clear()` empties the cache.
    """
    @functools.lru_cache(maxsize=MAX_ENTRIES)
    def memo(*args: Any) -> Any:
        with plain_tensor_mode():
            return build(*args)

    @functools.wraps(build)
    def lookup(*args: Any) -> Any:
        if torch.compiler.is_compiling():
            return build(*args)
        value = memo(*args)
        if not _is_plain(value):  # a torch without _DisableFuncTorch: never share a wrapped tensor
            memo.cache_clear()
            return build(*args)
        return value

    lookup.cache_clear = memo.cache_clear  # type: ignore[attr-defined]
    lookup.cache_info = memo.cache_info  # type: ignore[attr-defined]
    return lookup  # type: ignore[return-value]
