"""The base of every datamodule that draws its pre-training set by a long-tail profile.

The profile options (``--data.profile``, ``--data.imbalance_ratio``, ``--data.seed``,
``--data.head_order``, ``--data.img_max``, ``--data.subsample``, ``--data.balanced_twin``) and the
few-shot probe sets (``--data.few_shot``) are declared here, once: LightningCLI derives the flags
from this signature, and a subclass that passes ``**kwargs`` on gets them all. They are held as one
:class:`~datamodules.profiles.LongTailProfile` (``self.long_tail``), checked before any data is
read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from datamodules.base import LongTailDataModule
from datamodules.checks import check_choice, check_seed
from datamodules.profiles import PROFILES, LongTailProfile, check_few_shot

NO_PROFILE = "none"  # keep the source as it is (a subclass that allows it: ``keeps_source = True``)


class ProfiledLTDataModule(LongTailDataModule):
    """A datamodule whose pre-training set is a long-tail profile over a labelled source.

    ``self.long_tail`` is the :class:`LongTailProfile` to draw, or ``None`` when the subclass allows
    ``profile="none"`` (``keeps_source``) and it is given: the whole source, as it is.
    """

    keeps_source: ClassVar[bool] = False  # whether profile="none" (no profile) is a valid choice

    def __init__(
        self,
        profile: str = LongTailProfile.profile,
        imbalance_ratio: float | None = LongTailProfile.imbalance_ratio,
        seed: int = LongTailProfile.seed,
        head_order: str = LongTailProfile.head_order,
        img_max: float | None = LongTailProfile.img_max,
        subsample: float = LongTailProfile.subsample,
        balanced_twin: bool = LongTailProfile.balanced_twin,
        few_shot: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            profile: ``exp`` | ``step`` | ``pareto`` | ``balanced`` (LDAM conventions,
                ``docs/protocols.md §2``).
            imbalance_ratio: n_min / n_max in (0, 1]; 0.01 is the standard rho = 100 (``None``: 0.01).
            seed: seed of the long-tailed selection (LDAM's ``rand_number``; 0 reproduces LDAM), of
                the permuted class order and of the few-shot sets.
            head_order: ``natural`` (class 0 = head, LDAM) or ``permuted`` by ``seed``.
            img_max: size of the head class; default the smallest class of the source.
            subsample: per-class sampling ratio in (0, 1] (rwSAM's sample-size axis).
            balanced_twin: pre-train on the balanced set of the same total size instead
                (rwSAM's control at equal n).
            few_shot: shots per class of extra few-shot probe sets, e.g. ``[100, 50]`` (BCL).
            **kwargs: view and loader options of :class:`LongTailDataModule`.
        """
        super().__init__(**kwargs)
        check_choice("profile", profile, (NO_PROFILE, *PROFILES) if self.keeps_source else PROFILES)
        self.long_tail: LongTailProfile | None = None
        if profile == NO_PROFILE:
            _check_no_profile(imbalance_ratio, head_order, img_max, subsample, balanced_twin)
            check_seed("seed", seed)
        else:
            ratio = LongTailProfile.imbalance_ratio if imbalance_ratio is None else imbalance_ratio
            self.long_tail = LongTailProfile(profile, ratio, seed, head_order, img_max, subsample, balanced_twin)
            if imbalance_ratio is None:
                self._record_resolved(imbalance_ratio=ratio)
        check_few_shot(few_shot)
        self.seed = seed
        self.few_shot = list(few_shot or [])


def _check_no_profile(
    imbalance_ratio: float | None, head_order: str, img_max: float | None, subsample: float, balanced_twin: bool
) -> None:
    """With ``profile="none"`` the source is kept as it is: a profile option would be ignored, so
    giving one is an error that names the profile to pass."""
    given = [
        f"{name}={value!r}"
        for name, value, default in (
            ("imbalance_ratio", imbalance_ratio, None),
            ("head_order", head_order, "natural"),
            ("img_max", img_max, None),
            ("subsample", subsample, 1.0),
            ("balanced_twin", balanced_twin, False),
        )
        if value != default
    ]
    if given:
        raise ValueError(
            f"{', '.join(given)} shape a long-tail profile, but profile='none' keeps the folder as it "
            "is: pass --data.profile exp (or step, pareto, balanced) with it"
        )
