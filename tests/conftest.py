"""Shared test settings: small, deterministic, CPU."""

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

# One thread: the tensors are tiny and CI machines are shared, where two
# threads contend (measured: 179 s vs 7 s for the architecture tests).
torch.set_num_threads(1)

# Torch calls vary in time on a shared 2-core machine: no per-example deadline.
settings.register_profile(
    "fpstab",
    deadline=None,
    derandomize=True,
    # Shrinking a failing torch example can take minutes; the seed it prints suffices.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fpstab")


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
