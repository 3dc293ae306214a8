"""Methods with a fault built in, named by class path on the command line by the tests."""

from __future__ import annotations

from lightning_ssl.methods import SimCLR
from lightning_ssl.methods.base import Batch, LossOutput


class NaNFromStep1(SimCLR):
    """SimCLR whose loss is NaN from optimiser step 1 on (for ``nonfinite`` tests)."""

    def compute_losses(self, batch: Batch) -> LossOutput:
        out = super().compute_losses(batch)
        if self.trainer.global_step >= 1:
            return LossOutput(out.losses * float("nan"), out.features, logs=out.logs)
        return out
