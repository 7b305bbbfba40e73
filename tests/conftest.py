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
