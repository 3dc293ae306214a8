"""Long-tail profiles: pure functions from labels to the indices of a long-tailed subset.

No torch needed. The conventions are those of LDAM-DRW (Cao et al., NeurIPS 2019,
``imbalance_cifar.py``), which the long-tailed SSL literature (MTTV, GH, rwSAM-style work) reuses:

* ``imbalance_ratio`` is ``n_min / n_max`` (LDAM's ``imb_factor``; 0.01 means rho = 100);
* ``img_max`` defaults to the size of the smallest class of the source (5000 for CIFAR-10, i.e.
  ``len(data) / num_classes`` as in LDAM when the source is balanced);
* selection: one ``RandomState(seed)`` stream; for each class in class-index order its indices are
  shuffled and the first ``n_c`` kept; the result is the class blocks stacked in class order.

With ``profile="exp"``, ``imbalance_ratio=0.01``, ``seed=0`` and ``head_order="natural"`` this
selects exactly LDAM's CIFAR-10/100-LT indices (checked against the md5 prefixes in
``shared/data/README.md`` by the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamodules.checks import check_choice, check_fraction, check_int, check_positive, check_seed
from datamodules.errors import DataInputError

PROFILES = ("exp", "step", "pareto", "balanced")
HEAD_ORDERS = ("natural", "permuted")


@dataclass(frozen=True)
class LongTailProfile:
    """How a long-tailed subset is drawn from labelled data: the profile options of every datamodule
    that builds one (``--data.profile``, ``--data.imbalance_ratio``, ...), held and checked here.

    Made from the datamodule's ``__init__`` arguments (LightningCLI derives the flags from those),
    and checked then, before any data is read: a bad option is a one-line ``ValueError`` naming it,
    the valid range and the fix. Whether the profile leaves every class at least one image depends
    on the data: :func:`long_tail_indices` checks that when the set is built.

    Attributes:
        profile: ``exp`` | ``step`` | ``pareto`` | ``balanced`` (see :func:`profile_counts`).
        imbalance_ratio: ``n_min / n_max`` in (0, 1]; 0.01 is the standard rho = 100.
        seed: seed of the selection stream (LDAM's ``rand_number``, default 0) and of the class order.
        head_order: ``natural`` (class 0 is the head, as LDAM) or ``permuted`` by ``seed`` (as SDCLR).
        img_max: size of the head class; default the smallest class size of the source.
        subsample: keep ``int(n_c * subsample)`` of each class (rwSAM's sampling ratio, Liu et al.
            ICLR 2022 §3: 0.75, 0.5, 0.25, 0.125).
        balanced_twin: draw instead a balanced set of the same total size, ``N // C`` per class
            (rwSAM's control at equal n; SDCLR's ``D_b`` has exactly these sizes).
    """

    profile: str = "exp"
    imbalance_ratio: float = 0.01
    seed: int = 0
    head_order: str = "natural"
    img_max: float | None = None
    subsample: float = 1.0
    balanced_twin: bool = False

    def __post_init__(self) -> None:
        check_choice("profile", self.profile, PROFILES)
        check_fraction(
            "imbalance_ratio",
            self.imbalance_ratio,
            0.01,
            why="n_min / n_max: 0.01 is a 100:1 imbalance, 1.0 a balanced set",
        )
        check_seed("seed", self.seed)
        check_choice("head_order", self.head_order, HEAD_ORDERS)
        check_positive("img_max", self.img_max, 500, optional=True, why="images of the head class")
        check_fraction("subsample", self.subsample, 0.5, why="the share of each class kept")


def check_few_shot(few_shot: Sequence[int] | None) -> None:
    """Shots per class of the few-shot probe sets: each an int >= 1, none listed twice."""
    shots = list(few_shot or [])
    for k in shots:
        check_int("few_shot", k, 1, [100], why="images per class of a few-shot probe set")
    if len(set(shots)) != len(shots):
        raise ValueError(
            f"few_shot={shots} lists a probe set twice; pass each number of shots once, e.g. "
            f"--data.few_shot {sorted(set(shots), reverse=True)}"
        )


def profile_counts(
    num_classes: int,
    img_max: float,
    profile: str = "exp",
    imbalance_ratio: float = 0.01,
    num_frequent: int | None = None,
) -> np.ndarray:
    """Per-rank class sizes of a profile, rank 0 = head (most frequent class).

    * ``exp`` (LDAM, Cao et al. 2019 §4.1): ``n_r = int(img_max * ratio ** (r / (C - 1)))``.
    * ``step`` (LDAM; Buda et al. 2018): the first ``num_frequent`` ranks (default ``C // 2``) get
      ``int(img_max)``, the others ``int(img_max * ratio)``.
    * ``pareto``: a rank-size (Zipf, i.e. discrete Pareto) law with the same end points,
      ``n_r = int(img_max * ratio ** (ln(r + 1) / ln C))``: straight on log-log axes, with the steep
      head drop of ImageNet-LT (Liu et al. 2019, Pareto alpha=6) and ImageNet-100-LT
      (1280, 679, 511, ...). Our choice: OLTR published the list, not a formula.
    * ``balanced``: ``int(img_max)`` for every class.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if not 0.0 < imbalance_ratio <= 1.0:
        raise ValueError(
            f"imbalance_ratio={imbalance_ratio} is outside (0, 1]: it is n_min / n_max "
            f"(0.01 means a 100:1 imbalance; LDAM's imb_factor)"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a long-tail profile needs at least 2 classes")
    ranks = np.arange(num_classes, dtype=np.float64)
    if profile == "exp":
        counts = [int(img_max * imbalance_ratio ** (r / (num_classes - 1.0))) for r in ranks]
    elif profile == "step":
        frequent = num_classes // 2 if num_frequent is None else num_frequent
        if not 0 < frequent < num_classes:
            raise ValueError(f"num_frequent={frequent} must be in [1, {num_classes - 1}]")
        counts = [int(img_max) if r < frequent else int(img_max * imbalance_ratio) for r in ranks]
    elif profile == "pareto":
        log_c = math.log(num_classes)
        counts = [int(img_max * imbalance_ratio ** (math.log(r + 1.0) / log_c)) for r in ranks]
    else:
        counts = [int(img_max)] * num_classes
    return np.asarray(counts, dtype=np.int64)


def head_to_tail_order(num_classes: int, head_order: str = "natural", seed: int = 0) -> np.ndarray:
    """Class id at each frequency rank: identity (LDAM, class 0 = head) or a seeded permutation
    (SDCLR's random class order per split)."""
    if head_order not in HEAD_ORDERS:
        raise ValueError(f"unknown head_order {head_order!r}; valid: {', '.join(HEAD_ORDERS)}")
    if head_order == "natural":
        return np.arange(num_classes, dtype=np.int64)
    # A separate stream from the selection's, so that permuting the order does not change which
    # images the natural order would pick for a class of the same size.
    return np.random.default_rng([seed, 0xC1A55]).permutation(num_classes).astype(np.int64)


def long_tail_indices(
    labels: Sequence[int] | np.ndarray,
    profile: LongTailProfile = LongTailProfile(),
    num_classes: int | None = None,
    num_frequent: int | None = None,
) -> np.ndarray:
    """Indices into ``labels`` of the long-tailed subset ``profile`` draws (LDAM conventions, see
    the module docstring).

    Args:
        labels: class id of every example of the source set (ints in ``[0, num_classes)``).
        profile: the profile options (:class:`LongTailProfile`; LDAM's CIFAR-LT by default).
        num_classes: default ``max(labels) + 1``.
        num_frequent: number of frequent classes of the ``step`` profile (default ``C // 2``).

    Returns:
        int64 indices, class blocks in class-id order, each block in shuffled order.

    Raises:
        ValueError: a class that would be left empty, or a class with fewer examples than the
            profile asks for.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0 (found {labels.min()}); unlabeled data has no profile")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    available = np.bincount(labels, minlength=num_classes)
    img_max = float(available.min()) if profile.img_max is None else profile.img_max
    subsample = profile.subsample
    per_rank = profile_counts(num_classes, img_max, profile.profile, profile.imbalance_ratio, num_frequent)
    order = head_to_tail_order(num_classes, profile.head_order, profile.seed)
    counts = np.zeros(num_classes, dtype=np.int64)
    counts[order] = (per_rank * subsample).astype(np.int64)
    if profile.balanced_twin:
        counts[:] = int(counts.sum()) // num_classes
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise DataInputError(
            f"profile {profile.profile!r} with imbalance_ratio={profile.imbalance_ratio}, img_max={img_max:g} and "
            f"subsample={subsample} leaves class(es) {empty.tolist()} empty "
            f"(smallest class size {per_rank.min() * subsample:.2f}): raise --data.imbalance_ratio (to about "
            f"{1.0 / (img_max * subsample):.3g} or more here), --data.img_max or --data.subsample"
        )
    short = np.flatnonzero(counts > available)
    if short.size:
        c = int(short[0])
        raise DataInputError(
            f"class {c} has {available[c]} examples but the profile asks for {counts[c]} (img_max={img_max:g}): "
            f"pass --data.img_max {int(available.min())} or less"
        )
    rng = np.random.RandomState(profile.seed)
    blocks = []
    for c in range(num_classes):
        idx = np.where(labels == c)[0]
        rng.shuffle(idx)
        blocks.append(idx[: counts[c]])
    return np.concatenate(blocks).astype(np.int64)
