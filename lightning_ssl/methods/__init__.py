"""One LightningModule per SSL method; each is selectable by bare name from the CLI.

rwSAM is not a class: it is the ``sam`` option of every method (``--model.sam.rho 0.05
--model.sam.weights kde``), see :class:`lightning_ssl.optim.sam.SAMConfig`. Likewise TS (the
``temperature_schedule`` option of every InfoNCE method) and GH (the ``gh`` option of SimCLR, SDCLR
and BCL), docs/methods.md §14-§15.
"""

from lightning_ssl.methods.base import LossOutput, SSLMethod, weighted_mean
from lightning_ssl.methods.bcl import BCL, BCLD, BCLI
from lightning_ssl.methods.dnc import DnC
from lightning_ssl.methods.moclr import MoCLR
from lightning_ssl.methods.mocov2 import MoCoV2
from lightning_ssl.methods.mttv import MTTV
from lightning_ssl.methods.sdclr import SDCLR
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.simsiam import SimSiam
from lightning_ssl.methods.supervised import Supervised
from lightning_ssl.methods.swav import SwAV
from lightning_ssl.methods.uota import UOTA, UOTAMoCoV2, UOTASimCLR, UOTASwAV

__all__ = [
    "BCL",
    "BCLD",
    "BCLI",
    "MTTV",
    "SDCLR",
    "UOTA",
    "DnC",
    "LossOutput",
    "MoCLR",
    "MoCoV2",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "Supervised",
    "SwAV",
    "UOTAMoCoV2",
    "UOTASimCLR",
    "UOTASwAV",
    "weighted_mean",
]
