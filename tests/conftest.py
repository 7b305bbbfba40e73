"""Shared test settings: small, CPU, property tests on fresh examples.

Property tests draw new examples on every run (no fixed derandomized set):
a failure prints its falsifying example (the drawn seeds and values) and a
@reproduce_failure blob, and is replayed first on the next local run from
the example database. HYPOTHESIS_PROFILE=fpstab-fixed runs one fixed set
instead (e.g. to bisect).
"""

import os

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
