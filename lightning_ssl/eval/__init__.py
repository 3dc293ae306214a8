"""Evaluation: metrics, kNN, linear probes and their callbacks.

Every number reports overall top-1, per-class accuracy, many / medium / few accuracy and their
population standard deviation, with the group rule and the probe type in the metric name
(docs/design.md §7, docs/protocols.md §4 and §10).
"""

from lightning_ssl.eval.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_ssl.eval.features import extract_features
from lightning_ssl.eval.knn import knn_predict
from lightning_ssl.eval.linear import fit_linear_probe, predict
from lightning_ssl.eval.metrics import group_accuracy, group_report, per_class_accuracy, rule_key

__all__ = [
    "KNNMonitor",
    "OnlineLinearProbe",
    "extract_features",
    "fit_linear_probe",
    "group_accuracy",
    "group_report",
    "knn_predict",
    "per_class_accuracy",
    "predict",
    "rule_key",
]
