"""Known, non-actionable log lines that torch and torchao print while importing, dropped at their loggers.

torchao tries to load its CUDA kernels on a CPU-only machine, and torch flags an Enum registration
inside torchao (which peft imports too). Neither says anything about our models, and whether they show
depends on import order, so they would make executed notebooks differ from run to run.
"""

from __future__ import annotations

import logging

_NOISE = {"torchao": "Failed to load", "torch.utils._pytree": "register_constant() on Enum"}


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet() -> None:
    """Install the filters (idempotent); call before importing torchao or peft."""
    for name, fragment in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragment))
