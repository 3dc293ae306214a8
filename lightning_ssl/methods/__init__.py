"""One LightningModule per SSL method; each is selectable by bare name from the CLI."""

from lightning_ssl.methods.base import LossOutput, SSLMethod, weighted_mean
from lightning_ssl.methods.mocov2 import MoCoV2
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.supervised import Supervised

__all__ = ["LossOutput", "MoCoV2", "SSLMethod", "SimCLR", "Supervised", "weighted_mean"]
