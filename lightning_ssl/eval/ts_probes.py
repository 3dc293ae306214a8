"""The evaluation of TS (Kukleva et al. ICLR 2023), as their released notebooks compute it
(``notebooks/simclr_tau_*.ipynb``; docs/methods.md §14.4): probes whose memory is the long-tailed
pre-training set itself, not a balanced probe set.

* ``ts_knn1``, ``ts_knn10``: k-nearest neighbours by Euclidean distance between L2-normalised
  backbone features (the ranking of cosine similarity) against the pre-training set, an
  **unweighted** majority vote, ties to the lowest class id (``np.argmax``). The notebooks report
  the mean of the per-class accuracies (``{probe}/acc_mean_class`` here).
* ``ts_svm_fs``: ``sklearn.svm.LinearSVC(random_state=42)`` (C = 1, squared hinge, one-vs-rest) on
  the pre-training set cut to ``n_min`` images per class (the smallest class count; a
  ``np.random.seed(42)`` shuffle of each class picks them). ``ts_svm_lt``: the same SVM on the whole
  pre-training set. The notebooks report overall test accuracy (``{probe}/acc_top1``).

Difference from the notebooks: the bank is the pre-training set under the clean eval transform
(the suite never probes augmented features, docs/protocols.md §6), where their CIFAR bank went
through one random crop-and-flip pass; and it is in index order, so the seeded shuffle picks other
few-shot images than their randomly ordered loader did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.svm import LinearSVC

from lightning_ssl.eval.features import extract_features
from lightning_ssl.eval.metrics import group_report, per_class_accuracy

TS_PROBES = ("ts_knn1", "ts_knn10", "ts_svm_fs", "ts_svm_lt")
SEED = 42  # the notebooks' np.random.seed(42) and LinearSVC(random_state=42)


@torch.no_grad()
def knn_majority(
    query: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int, chunk_size: int = 1024
) -> torch.Tensor:
    """Unweighted k-NN on L2-normalised features (Euclidean = cosine ranking): each query's class is
    the most frequent label among its ``k`` nearest bank entries, ties to the lowest class id."""
    if k < 1 or k > bank.shape[0]:
        raise ValueError(f"k={k} must be in [1, bank size {bank.shape[0]}]")
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.to(bank.device).long()
    out = []
    for start in range(0, query.shape[0], chunk_size):
        q = F.normalize(query[start : start + chunk_size].to(bank.device).float(), dim=1)
        idx = torch.cdist(q, bank).topk(k, dim=1, largest=False).indices
        votes = torch.zeros(q.shape[0], num_classes, device=bank.device).scatter_add_(
            1, labels[idx], torch.ones(idx.shape, device=bank.device)
        )
        out.append(votes.argmax(dim=1))  # first maximum: the lowest class id wins a tie
    return torch.cat(out).to(query.device)


def few_shot_subset(labels: np.ndarray, num_classes: int, seed: int = SEED) -> np.ndarray:
    """The notebooks' FS subsample: every class cut to ``n_min`` (the smallest count of a class that is
    present), the kept positions picked by ``np.random.seed(seed)`` and one shuffle per class in class order."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0], minlength=num_classes)
    n_min = int(counts[counts > 0].min())
    np.random.seed(seed)
    picked = []
    for c in range(num_classes):
        idx = np.where(labels == c)[0]
        if idx.size == 0:
            continue
        np.random.shuffle(idx)
        picked.append(idx[:n_min])
    return np.concatenate(picked)


def linear_svm(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """``LinearSVC(random_state=42)`` (scikit-learn defaults) on L2-normalised features; predictions."""

    def norm(x: torch.Tensor) -> np.ndarray:
        return F.normalize(x.float(), dim=1).cpu().numpy()

    svm = LinearSVC(random_state=SEED)
    svm.fit(norm(train_x), train_y.cpu().numpy())
    return torch.as_tensor(svm.predict(norm(test_x)), dtype=torch.long)


def ts_probes(
    model: torch.nn.Module,
    datamodule: Any,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    groups: Mapping[str, Sequence[int]],
    rule: str,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """TS's four probes of ``model`` with the pre-training set (``pretrain_eval_dataloader()``, labelled
    samples only) as the memory; returns ``(metrics, per_class)`` named ``ts_knn1/...`` etc., with the
    suite's overall, per-class-mean and group accuracies for each."""
    bank_x, bank_y, _ = extract_features(model, datamodule.pretrain_eval_dataloader(), device=device, progress=progress)
    keep = bank_y >= 0
    bank_x, bank_y = bank_x[keep], bank_y[keep]
    if bank_x.shape[0] == 0:
        raise ValueError("the TS probes need a labelled pre-training set (its labels are all unknown)")
    preds = {
        "ts_knn1": knn_majority(test_x, bank_x, bank_y, num_classes, 1),
        "ts_knn10": knn_majority(test_x, bank_x, bank_y, num_classes, min(10, bank_x.shape[0])),
    }
    fs = torch.as_tensor(few_shot_subset(bank_y.cpu().numpy(), num_classes), device=bank_x.device)
    preds["ts_svm_fs"] = linear_svm(bank_x[fs], bank_y[fs], test_x)
    preds["ts_svm_lt"] = linear_svm(bank_x, bank_y, test_x)
    metrics: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    for name, pred in preds.items():
        metrics.update(group_report(pred.cpu(), test_y.cpu(), num_classes, groups, rule, name))
        per_class[name] = per_class_accuracy(pred.cpu(), test_y.cpu(), num_classes).tolist()
    return metrics, per_class
