"""fpstab: fixed-point stability analysis for looped transformers.

The command line and orchestration layer. It composes the lower packages
(`architectures`, `fixedpoint`, `tasks`, `reports`); none of them imports it.
"""

__version__ = "0.1.0"
