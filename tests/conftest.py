"""Shared test settings: small, CPU, property tests on fresh examples.

Property tests draw new examples on every run (no fixed derandomized set):
a failure prints its falsifying example (the drawn seeds and values) and a
@reproduce_failure blob, and is replayed first on the next local run from
the example database. HYPOTHESIS_PROFILE=fpstab-fixed runs one fixed set
instead (e.g. to bisect).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

# One thread: the tensors are tiny and CI machines are shared, where two
# threads contend (measured: 179 s vs 7 s for the architecture tests).
torch.set_num_threads(1)

_COMMON = dict(
    # Torch calls vary in time on a shared 2-core machine: no per-example deadline.
    deadline=None,
    # Shrinking a failing torch example can take minutes; the example it prints suffices.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("fpstab", derandomize=False, **_COMMON)
settings.register_profile("fpstab-fixed", derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fpstab"))


@pytest.fixture
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every tensor -> Python value conversion (a host sync on an accelerator) by method name."""
    calls: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self: torch.Tensor, *args: object, _name: str = name, _original: object = original) -> object:
            calls.append(_name)
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.fixture
def no_cxx_compiler():
    """Inductor pointed at a C++ compiler that does not exist, through its own `config.patch`
    (pytest's monkeypatch can delete a torch config entry on undo), with the FX graph cache off
    (a cached kernel would skip the compiler) and dynamo's compiled code dropped on both sides."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import cpp_compiler_search

    cpp_compiler_search.cache_clear()
    torch._dynamo.reset()
    try:
        with config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
            yield
    finally:
        cpp_compiler_search.cache_clear()
        torch._dynamo.reset()
