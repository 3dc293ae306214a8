"""The base checks every training batch against the views the method declared, before
``compute_losses``, with one message: the method, the declaration, what arrived and the data option
that fixes it (docs/design.md §3 and §5)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import pytorch_lightning as pl
import torch

from datamodules.base import LongTailDataModule
from datamodules.digits import DigitsLT
from lightning_ssl.methods import (
    BCLD,
    BCLI,
    MTTV,
    SDCLR,
    MoCLR,
    MoCoV2,
    SimCLR,
    SimSiam,
    Supervised,
    SwAV,
    UOTASwAV,
)
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.declared_views import VIEW_OPTIONS, Views, views_mismatch

TINY = dict(backbone="resnet_tiny", image_size=16)
B = 4


def _batch(n: int, side: int = 16) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    return [torch.randn(B, 3, side, side) for _ in range(n)], torch.zeros(B, dtype=torch.long), torch.arange(B)


def test_views_fields_are_the_datamodule_options() -> None:
    assert VIEW_OPTIONS == ("num_large_views", "num_small_views", "small_size", "clean_view")
    assert set(VIEW_OPTIONS) <= set(inspect.signature(LongTailDataModule.__init__).parameters)


def test_views_count_describe_and_fix() -> None:
    assert (Views().min_views(), Views().describe(), Views().fix()) == (1, "1 large view", "--data.num_large_views 1")
    multi = Views(num_large_views=2, num_small_views=4)
    assert (multi.min_views(), multi.describe()) == (6, "2 large + 4 small views")
    assert multi.fix() == "--data.num_large_views 2 --data.num_small_views 4"
    clean = Views(clean_view=True)
    assert (clean.min_views(), clean.describe(), clean.fix()) == (
        2,
        "1 large view + the clean view last",
        "--data.clean_view true",
    )


def test_one_message_names_the_method_the_declaration_what_arrived_and_the_fix() -> None:
    views = _batch(2)[0]
    assert views_mismatch("SimCLR", Views(num_large_views=3), views) == (
        "SimCLR declares 3 large views per image, but the batch carries 2 views (sides 16, 16): pass "
        "--data.num_large_views 3 (lssl fit and lssl sweep set them from the method's options)"
    )
    assert views_mismatch("SimCLR", Views(num_large_views=3), views, {"num_large_views": 2}) == (
        "SimCLR declares 3 large views per image, but the datamodule makes num_large_views=2: pass "
        "--data.num_large_views 3 (lssl fit and lssl sweep set them from the method's options)"
    )
    # the clean view has the large crops' size: only the datamodule can tell it is missing
    assert views_mismatch("MTTV", Views(clean_view=True), views) is None
    assert "makes clean_view=False: pass --data.clean_view true" in views_mismatch(
        "MTTV", Views(clean_view=True), views, {"clean_view": False, "num_large_views": 2}
    )
    assert views_mismatch("SimCLR", Views(num_large_views=2), [*views, views[0]], {"num_large_views": 2}) is None
    assert "reads a list of views from batch[0]" in views_mismatch("SimCLR", Views(), views[0])


METHODS: dict[str, Callable[[], SSLMethod]] = {
    "SimCLR": lambda: SimCLR(num_large_views=3, proj_hidden_dim=16, proj_output_dim=8, **TINY),
    "MoCoV2": lambda: MoCoV2(num_large_views=3, proj_hidden_dim=16, proj_output_dim=8, queue_size=8, **TINY),
    "SimSiam": lambda: SimSiam(proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=8, **TINY),
    "SwAV": lambda: SwAV(num_small_views=2, proj_hidden_dim=16, proj_output_dim=8, num_prototypes=5, **TINY),
    "MoCLR": lambda: MoCLR(proj_hidden_dim=16, proj_output_dim=8, **TINY),
    "MTTV": lambda: MTTV(**TINY),
    "SDCLR": lambda: SDCLR(proj_hidden_dim=16, proj_output_dim=8, **TINY),
    "BCLI": lambda: BCLI(proj_hidden_dim=16, proj_output_dim=8, **TINY),
    "BCLD": lambda: BCLD(proj_hidden_dim=16, proj_output_dim=8, **TINY),
    "Supervised": lambda: Supervised(num_classes=10, **TINY),
    "UOTASwAV": lambda: UOTASwAV(num_small_views=2, proj_hidden_dim=16, proj_output_dim=8, num_prototypes=5, **TINY),
}
EXPECTED = {
    "SimCLR": (3, "3 large views"),
    "MoCoV2": (3, "3 large views"),
    "SimSiam": (2, "2 large views"),
    "SwAV": (4, "2 large + 2 small views"),
    "MoCLR": (2, "2 large views"),
    "MTTV": (2, "1 large view + the clean view last"),
    "SDCLR": (2, "2 large views"),
    "BCLI": (2, "2 large views"),
    "BCLD": (2, "2 large views"),
    "Supervised": (1, "1 large view"),
    "UOTASwAV": (4, "2 large + 2 small views"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_checked_by_the_base_with_the_same_message(name: str) -> None:
    model = METHODS[name]()
    needed, described = EXPECTED[name]
    assert model.declared_views.min_views() == needed
    model.check_views(_batch(needed))  # exactly what it declared: fine
    with pytest.raises(
        ValueError,
        match=rf"^{name} declares {re.escape(described)} per image, but the batch carries "
        rf"{needed - 1} views?\b.*: pass --data\.\S+ \S+",
    ):
        model.check_views(_batch(needed - 1))


def test_the_check_runs_in_the_training_step_before_compute_losses() -> None:
    model = SimCLR(num_large_views=3, proj_hidden_dim=16, proj_output_dim=8, **TINY)

    def not_reached(batch: object) -> None:
        raise AssertionError("compute_losses ran before the views were checked")

    model.compute_losses = not_reached  # type: ignore[method-assign]
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with pytest.raises(
        ValueError,
        match="SimCLR declares 3 large views per image, but the datamodule makes "
        "num_large_views=2: pass --data.num_large_views 3",
    ):
        trainer.fit(model, DigitsLT(batch_size=16, image_size=16))
