"""TS (docs/methods.md §14) and GH (§15) against their official formulas, and TS's probes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lightning_ssl.eval.linear import _lr_at, make_recipe
from lightning_ssl.eval.ts_probes import few_shot_subset, knn_majority
from lightning_ssl.losses import nt_xent, sinkhorn_knopp
from lightning_ssl.losses.gh import etf_from_gaussian, gh_logits, gh_loss, gh_prior, simplex_etf
from lightning_ssl.methods import BCLI, MTTV, SDCLR, MoCLR, MoCoV2, SimCLR
from lightning_ssl.methods.gh import GeometricHarmonization, GHConfig
from lightning_ssl.methods.temperature import TemperatureSchedule
from lightning_ssl.schedules import cosine_temperature, temperature_schedule

SMALL = {"backbone": "resnet_tiny", "image_size": 8, "lr": 0.05, "warmup_epochs": 0}


# -- TS ----------------------------------------------------------------------------------------------
def test_ts_values_at_start_half_and_whole_period() -> None:
    # (tau_min, tau_max, t_max) = (0.1, 1.0, 200): the README's command; values of the official formula
    expected = {
        0: 1.0,
        1: 0.99994448,
        50: 0.86819805,
        100: 0.55,
        150: 0.23180195,
        200: 0.1,
        300: 0.55,
        400: 1.0,
        2000: 1.0,
    }
    for epoch, tau in expected.items():
        assert cosine_temperature(epoch, 0.1, 1.0, 200) == pytest.approx(tau, abs=1e-8)


def test_ts_per_step_array_is_constant_within_an_epoch() -> None:
    # period 4 epochs (t_max 2), 3 steps per epoch: 1-based epochs 1..5 at a quarter, half, ...
    values = temperature_schedule(0.1, 1.0, 4, steps_per_epoch=3, total_steps=15)
    per_epoch = values.reshape(5, 3)
    assert (per_epoch == per_epoch[:, :1]).all()
    assert per_epoch[:, 0] == pytest.approx([0.55, 0.1, 0.55, 1.0, 0.55])  # half period: tau_min; whole: tau_max


def fixed_batches(n: int = 16, size: int = 8, views: int = 2) -> list:
    g = torch.Generator().manual_seed(0)
    return [([torch.randn(3, size, size, generator=g) for _ in range(views)], 0, i) for i in range(n)]


def fit(model: pl.LightningModule, steps: int = 4, callbacks: list | None = None) -> pl.LightningModule:
    pl.seed_everything(0)
    # epochs, not max_steps: without a datamodule the base counts an epoch from max_epochs
    trainer = pl.Trainer(
        max_epochs=steps // 2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )
    trainer.fit(model, DataLoader(fixed_batches(), batch_size=8))  # 2 steps per epoch
    return model


def test_a_schedule_with_tau_min_equal_tau_max_is_constant_simclr_bit_for_bit() -> None:
    torch.manual_seed(0)
    plain = fit(SimCLR(proj_hidden_dim=16, proj_output_dim=8, temperature=0.2, **SMALL))
    torch.manual_seed(0)
    scheduled = fit(
        SimCLR(
            proj_hidden_dim=16,
            proj_output_dim=8,
            temperature=0.5,
            **SMALL,
            temperature_schedule=TemperatureSchedule(0.2, 0.2, 400),
        )
    )
    a, b = plain.state_dict(), scheduled.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class Record(pl.Callback):
    def __init__(self) -> None:
        self.taus: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.taus.append(pl_module.current_temperature())


def test_a_fit_follows_the_schedule_per_epoch() -> None:
    record = Record()
    model = SimCLR(
        proj_hidden_dim=16,
        proj_output_dim=8,
        **SMALL,
        temperature_schedule=TemperatureSchedule(0.1, 1.0, period_epochs=4),
    )
    fit(model, steps=8, callbacks=[record])  # 4 epochs of 2 steps
    expected = [cosine_temperature(e, 0.1, 1.0, 2) for e in (1, 1, 2, 2, 3, 3, 4, 4)]
    assert record.taus == pytest.approx(expected)
    # a fraction of the run: 0.5 of 4 epochs is a period of 2 epochs
    record = Record()
    fit(
        SimCLR(
            proj_hidden_dim=16,
            proj_output_dim=8,
            **SMALL,
            temperature_schedule=TemperatureSchedule(0.1, 1.0, period_epochs=0.5),
        ),
        steps=8,
        callbacks=[record],
    )
    assert record.taus == pytest.approx([cosine_temperature(e, 0.1, 1.0, 1) for e in (1, 1, 2, 2, 3, 3, 4, 4)])
    with pytest.raises(ValueError, match="tau_min <= tau_max"):
        TemperatureSchedule(1.0, 0.1)


@pytest.mark.parametrize("method", ["SimCLR", "MoCoV2", "MoCLR", "MTTV", "SDCLR", "BCLI"])
def test_every_infonce_method_uses_the_scheduled_temperature(method: str) -> None:
    """Outside a fit the schedule's value is tau_max: a scheduled method computes the loss of the
    same method at the constant temperature tau_max (same weights, same batch)."""
    classes = {"SimCLR": SimCLR, "MoCoV2": MoCoV2, "MoCLR": MoCLR, "MTTV": MTTV, "SDCLR": SDCLR, "BCLI": BCLI}
    kwargs = {"MoCoV2": {"queue_size": 16}, "MTTV": {}}.get(method, {"proj_hidden_dim": 16, "proj_output_dim": 8})
    if method == "MoCoV2":
        kwargs.update(proj_hidden_dim=16, proj_output_dim=8)
    torch.manual_seed(0)
    constant = classes[method](temperature=0.7, **kwargs, **SMALL)
    torch.manual_seed(0)
    scheduled = classes[method](
        temperature=0.1, temperature_schedule=TemperatureSchedule(0.1, 0.7, 400), **kwargs, **SMALL
    )
    scheduled.load_state_dict(constant.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = (
        [torch.randn(8, 3, 8, 8, generator=g) for _ in range(3)],
        torch.zeros(8, dtype=torch.long),
        torch.arange(8),
    )
    a, b = constant.compute_losses(batch), scheduled.compute_losses(batch)
    torch.testing.assert_close(a.losses, b.losses)
    assert float(b.logs["temperature"]) == pytest.approx(0.7)


# -- GH ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "d"), [(3, 3), (10, 16), (100, 128)])
def test_the_target_is_a_simplex_etf(k: int, d: int) -> None:
    m = simplex_etf(k, d, seed=0).double()
    gram = m @ m.T
    torch.testing.assert_close(gram.diagonal(), torch.ones(k, dtype=torch.float64), atol=1e-6, rtol=0)
    off = gram[~torch.eye(k, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (k - 1)), atol=1e-6, rtol=0)
    torch.testing.assert_close(m.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-5, rtol=0)
    assert int(torch.linalg.matrix_rank(m, atol=1e-5)) == k - 1


def test_the_target_is_built_as_the_official_generator_builds_it() -> None:
    from scipy import linalg

    a = np.random.default_rng(0).standard_normal((6, 9))
    u, _ = linalg.polar(a)  # gen_target.py: U, _ = linalg.polar(A); sqrt(k/(k-1)) (I - 1/k) U
    official = np.sqrt(6 / 5) * (np.eye(6) - np.ones(6) / 6) @ u
    np.testing.assert_allclose(etf_from_gaussian(torch.from_numpy(a)).numpy(), official, atol=1e-12)
    with pytest.raises(ValueError, match="num_anchors <= proj_output_dim = 4"):
        simplex_etf(5, 4)  # the official assert allows d + 1, where this construction is no simplex


T2 = torch.tensor([[0.8, 0.6], [0.6, 0.8]])


def test_sinkhorn_with_a_uniform_prior_has_the_closed_form() -> None:
    q = sinkhorn_knopp(T2, 0.05, 300, prior=torch.tensor([0.5, 0.5]))
    s = 1 / (1 + math.exp(-4))  # sigmoid((t11 + t22 - t12 - t21) / (2 eps))
    torch.testing.assert_close(q, torch.tensor([[s, 1 - s], [1 - s, s]]), atol=1e-6, rtol=0)
    assert s == pytest.approx(0.982014, abs=1e-6)


def test_sinkhorn_with_a_prior_solves_its_marginals() -> None:
    q = sinkhorn_knopp(T2, 0.05, 300, prior=torch.tensor([0.7, 0.3])).double()
    # independent truth: rows sum to 1, columns to N pi = (1.4, 0.6), cross-ratio e^((0.8+0.8-0.6-0.6)/0.05)
    ratio = math.exp(8)
    # q11 (q11 - 0.4) = ratio (1 - q11)(1.4 - q11)  ->  (1 - ratio) q11^2 + (-0.4 + 2.4 ratio) q11 - 1.4 ratio = 0
    roots = np.roots([1 - ratio, -0.4 + 2.4 * ratio, -1.4 * ratio])
    q11 = float(next(r.real for r in roots if 0.4 < r.real < 1))
    expected = torch.tensor([[q11, 1 - q11], [1.4 - q11, q11 - 0.4]], dtype=torch.float64)
    torch.testing.assert_close(q, expected, atol=1e-6, rtol=0)
    assert q11 == pytest.approx(0.999498, abs=1e-6) and 1.4 - q11 == pytest.approx(0.400502, abs=1e-6)
    # an empty anchor (pi_k = 0, possible without a floor) gets nothing, and no NaN
    q0 = sinkhorn_knopp(torch.randn(6, 3), 0.05, 50, prior=torch.tensor([0.5, 0.5, 0.0]))
    assert torch.isfinite(q0).all() and q0[:, 2].abs().max() == 0


def test_sinkhorn_marginals_match_the_prior_on_random_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    t = gh_logits(torch.randn(64, 16, generator=g), simplex_etf(10, 16))
    prior = torch.rand(10, generator=g)
    prior = prior / prior.sum()
    q = sinkhorn_knopp(t, 0.05, 300, prior=prior).double()
    torch.testing.assert_close(q.sum(1), torch.ones(64, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(q.sum(0), 64 * prior.double(), atol=1e-5, rtol=1e-6)


def test_the_gh_loss_on_hand_computed_cases() -> None:
    zeros = torch.zeros(4, 3)
    for prior in (None, torch.tensor([0.6, 0.3, 0.1])):
        assert float(gh_loss(zeros, zeros, prior).mean()) == pytest.approx(2 * math.log(3), abs=1e-6)  # 2.197225
    s = 1 / (1 + math.exp(-4))
    # rows [0.8, 0.6] / gamma 0.1: log softmax = (-log(1 + e^-2), -2 - log(1 + e^-2)); both directions equal
    by_hand = 2 * (math.log(1 + math.exp(-2)) + 2 * (1 - s))
    assert float(gh_loss(T2, T2, torch.tensor([0.5, 0.5])).mean()) == pytest.approx(by_hand, abs=1e-6)
    assert by_hand == pytest.approx(0.325801, abs=1e-6)


def test_the_prior_from_the_logit_memory() -> None:
    counts = [5, 3, 0, 2]
    memory = torch.cat([torch.eye(4)[k].repeat(n, 1) for k, n in enumerate(counts)])
    assert gh_prior(memory).tolist() == pytest.approx([0.5, 0.3, 0.0, 0.2])
    assert gh_prior(memory, floor=100).tolist() == pytest.approx([0.256098, 0.251220, 0.243902, 0.248780], abs=1e-6)
    seen = torch.ones(10, dtype=torch.bool)
    seen[:5] = False  # unseen samples do not count
    assert gh_prior(memory, seen).tolist() == pytest.approx([0.0, 0.6, 0.0, 0.4])


def test_the_weight_ramp_memory_momentum_and_prior_epochs_are_the_official_ones() -> None:
    gh = GeometricHarmonization(GHConfig(num_anchors=4), dim=8)
    gh.warmup = 500
    assert [gh.weight(e) for e in (0, 499, 500, 505, 509, 600)] == pytest.approx([0, 0, 0.1, 0.6, 1.0, 1.0])
    assert (gh.beta(499), gh.beta(500)) == (0.9, 0.999)
    gh.memory.resize(3)
    recomputed = []
    for epoch in (10, 498, 499, 500, 518, 519):
        gh.prior.fill_(-1.0)
        gh.remember(torch.eye(4)[:3], torch.arange(3))
        gh.after_step(epoch)
        recomputed.append(bool((gh.prior >= 0).all()))
    assert recomputed == [False, False, True, False, False, True]  # (e + 1) % 20 == 0 or e + 1 == warm-up
    gh2 = GeometricHarmonization(GHConfig(num_anchors=4), dim=8)
    gh2.memory.resize(2)
    gh2.warmup = 500
    gh2.remember(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]), torch.tensor([0, 1]))
    gh2.after_step(0)
    gh2.remember(torch.tensor([[0, 0, 1.0, 0], [0, 1.0, 0, 0]]), torch.tensor([0, 1]))
    gh2.after_step(1)
    assert gh2.memory.values[0].tolist() == pytest.approx([0.9, 0, 0.1, 0])  # first value, then beta 0.9


def test_simclr_adds_the_weighted_gh_loss() -> None:
    torch.manual_seed(0)
    model = SimCLR(
        proj_hidden_dim=16,
        proj_output_dim=8,
        temperature=0.2,
        **SMALL,
        gh=GHConfig(num_anchors=5, warmup_epochs=0, ramp_epochs=4, iterations=50),
    )
    model.gh.memory.resize(8)
    g = torch.Generator().manual_seed(1)
    batch = (
        [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)],
        torch.zeros(8, dtype=torch.long),
        torch.arange(8),
    )
    out = model.compute_losses(batch)
    z1, z2 = out.embeddings[0], out.embeddings[1]
    t1, t2 = gh_logits(z1, model.gh.target), gh_logits(z2, model.gh.target)
    # epoch 0 with no warm-up and a 4-epoch ramp: w = 1/4; uniform prior before the first refresh
    total = nt_xent(z1, z2, 0.2).mean() + 0.25 * gh_loss(t1, t2, torch.full((5,), 0.2), 0.05, 50, 0.1).mean()
    assert out.losses.mean().item() == pytest.approx(total.item(), abs=1e-5)
    model.after_optimizer_step()
    torch.testing.assert_close(model.gh.memory.values, t1.detach())  # the first view's logits, by index
    with pytest.raises(ValueError, match="gh needs num_large_views=2"):
        SimCLR(num_large_views=3, gh=GHConfig(num_anchors=5), **SMALL)
    with pytest.raises(ValueError, match="gh.warmup_epochs=1.5"):
        GHConfig(warmup_epochs=1.5)


# -- TS's probes and BCL's probe recipe ----------------------------------------------------------------
def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_knn_majority_on_angles() -> None:
    bank = torch.tensor([unit(0), unit(10), unit(20), unit(90)])
    labels = torch.tensor([0, 0, 0, 1])
    query, target = torch.tensor([unit(5), unit(50), unit(80)]), torch.tensor([0, 1, 1])
    k1 = knn_majority(query, bank, labels, 2, k=1)
    per_class = [float((k1[target == c] == c).float().mean()) for c in (0, 1)]
    assert per_class == [1.0, 0.5] and np.mean(per_class) == 0.75
    k2 = knn_majority(query, bank, labels, 2, k=2)  # 50 and 80 degrees: one vote each, the tie goes to class 0
    assert k2.tolist() == [0, 0, 0]


def test_few_shot_subset_cuts_every_class_to_the_smallest() -> None:
    labels = np.repeat([0, 1, 2], [45, 10, 4])
    picked = few_shot_subset(labels, 3)
    assert np.bincount(labels[picked]).tolist() == [4, 4, 4] and len(set(picked)) == 12


def test_ts_probes_through_the_offline_evaluation() -> None:
    from sklearn.svm import LinearSVC

    from datamodules.digits import DigitsLT
    from lightning_ssl.eval.features import extract_features
    from lightning_ssl.eval.offline import evaluate_frozen

    torch.manual_seed(0)
    model = SimCLR(backbone="resnet_tiny", image_size=16, proj_hidden_dim=16, proj_output_dim=8)
    dm = DigitsLT(eval_batch_size=512)
    result = evaluate_frozen(model, dm, named_probes=["ts"], knn_k=20)
    for probe in ("ts_knn1", "ts_knn10", "ts_svm_fs", "ts_svm_lt"):
        assert 0 <= result["metrics"][f"{probe}/acc_mean_class"] <= 1 and probe in result["per_class"]
    # the long-tailed SVM is scikit-learn's LinearSVC(random_state=42) on the normalised LT features
    bank, bank_y, _ = extract_features(model, dm.pretrain_eval_dataloader())
    test, test_y, _ = extract_features(model, dm.test_dataloader())
    norm = lambda x: torch.nn.functional.normalize(x, dim=1).numpy()  # noqa: E731
    svm = LinearSVC(random_state=42).fit(norm(bank), bank_y.numpy())
    assert result["metrics"]["ts_svm_lt/acc_top1"] == pytest.approx((svm.predict(norm(test)) == test_y.numpy()).mean())
    with pytest.raises(ValueError, match="unknown named probe"):
        evaluate_frozen(model, dm, named_probes=["colt"])


def test_bcl_probe_recipe_decays_exponentially() -> None:
    r = make_recipe("bcl")
    assert (r.optimizer, r.lr, r.final_lr, r.epochs, r.batch_size, r.weight_decay) == (
        "adam",
        1e-2,
        1e-6,
        500,
        1000,
        5e-6,
    )
    lr = [_lr_at(e * 10, 5000, 10, r.lr, None, r.final_lr, r.epochs) for e in (0, 250, 500)]
    assert lr == pytest.approx([1e-2, 1e-4, 1e-6])  # ExponentialLR with gamma = (1e-6 / 1e-2) ** (1 / 500)
