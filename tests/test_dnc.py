"""Divide-and-Contrast: the student's heads and loss by hand, routing by brute force, the experts'
budget against N2 x N image passes, and the resumable four-stage pipeline end to end on the
embedded digits: exact resume after every stage, fingerprint mismatches, preemption (Tian et al.,
ICCV 2021)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_ssl.cluster.kmeans import BACKENDS
from lightning_ssl.eval.diagnostics import loss_trend
from lightning_ssl.methods.dnc import DnC
from lightning_ssl.methods.dnc_pipeline import (
    STAGES,
    DnCPipeline,
    StageMismatchError,
    expert_steps,
    stage_losses,
    with_stage_warmup,
)
from lightning_ssl.sweep.identity import METHOD_VERSIONS, method_key
from lightning_ssl.sweep.runner import SweepPaths, run_one
from lightning_ssl.sweep.spec import expand, spec_from_dict

TINY = dict(backbone="resnet_tiny", image_size=16, proj_hidden_dim=8, proj_output_dim=2)


class Constant(nn.Module):
    """A stand-in teacher whose projector output is one fixed vector; counts the rows it sees."""

    def __init__(self, value: list[float]) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))
        self.rows_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows_seen += x.shape[0]
        return self.value.expand(x.shape[0], -1)


class RowSum(nn.Module):
    """A stand-in teacher that depends on the image: ``(k, sum(x))`` per row."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([self.k.expand_as(s), s], dim=1)


def constant_head(head: nn.Sequential, bias: list[float]) -> None:
    """Make a regression head output ``bias`` whatever its input."""
    with torch.no_grad():
        head[-1].weight.zero_()
        head[-1].bias.copy_(torch.tensor(bias))


def test_regression_heads_shape():
    """K+1 heads, each 256 -> 4096 (BN, ReLU) -> 256 without a final BN (§3.3), here 2 -> 5 -> 2."""
    student = DnC(head_hidden_dim=5, **TINY)
    student.set_teachers(Constant([1.0, 0.0]), [Constant([1.0, 0.0])] * 3, torch.tensor([0, 1, 2]))
    assert len(student.expert_heads) == 3
    for head in [student.base_head, *student.expert_heads]:
        kinds = [type(m) for m in head]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
        assert (head[0].in_features, head[0].out_features, head[-1].out_features) == (2, 5, 2)
    assert isinstance(student.projector[-1], nn.BatchNorm1d)  # MoCLR's projector ends in BN


def test_loss_matches_hand_computation():
    """(½‖r_b(z) − z_b/‖z_b‖‖² + ½‖r_k(z) − z_k/‖z_k‖‖²) / d, with constant heads and teachers (d = 2):
    base (3,4)->(.6,.8) vs r_b=(1,0): 0.4; expert 0 (0,5)->(0,1) vs r_0=(0,0): 0.5;
    expert 1 (-2,0)->(-1,0) vs r_1=(1,1): 2.5. Cluster-0 rows lose 0.9 / 2, cluster-1 rows 2.9 / 2."""
    student = DnC(head_hidden_dim=4, **TINY)
    experts = [Constant([0.0, 5.0]), Constant([-2.0, 0.0])]
    assignments = torch.tensor([1, 0, 0, 1, 1, 0])
    student.set_teachers(Constant([3.0, 4.0]), experts, assignments)
    for head, bias in zip([student.base_head, *student.expert_heads], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]):
        constant_head(head, bias)
    index = torch.tensor([5, 3, 0, 1])  # clusters 0, 1, 1, 0
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = student.compute_losses((views, torch.full((4,), -1), index))
    expected = torch.tensor([0.9, 2.9, 2.9, 0.9]).expand(2, 4) / 2
    torch.testing.assert_close(out.losses, expected)
    assert experts[0].rows_seen == 4 and experts[1].rows_seen == 4  # 2 rows x 2 views each
    torch.testing.assert_close(out.logs["distill_base"], torch.tensor(0.4 / 2))


def test_gradients_reach_student_not_teachers():
    student = DnC(head_hidden_dim=4, **TINY)
    base, experts = Constant([3.0, 4.0]), [Constant([0.0, 5.0]), Constant([-2.0, 0.0])]
    student.set_teachers(base, experts, torch.tensor([0, 1, 0, 1]))
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    student.compute_losses((views, torch.full((4,), -1), torch.arange(4))).losses.mean().backward()
    assert all(p.grad is None for t in (base, *experts) for p in t.parameters())
    assert student.projector[0].weight.grad.abs().sum() > 0
    assert all(h[0].weight.grad is not None for h in student.expert_heads)  # all heads in the graph (DDP)


def test_routing_row_i_gets_expert_of_its_index():
    """Brute force: row i's target is expert assignments[index[i]] applied to row i alone."""
    torch.manual_seed(0)
    k, n = 3, 20
    assignments = torch.randint(0, k, (n,))
    experts = [RowSum(j) for j in range(k)]
    student = DnC(head_hidden_dim=4, **TINY)
    student.set_teachers(RowSum(-1), experts, assignments)
    index = torch.randperm(n)[:8]
    x = torch.randn(8, 3, 16, 16)
    cluster = student.cluster_of(index)
    z_base, z_expert = student.teacher_targets(x, cluster)
    for i in range(8):
        expert = experts[int(assignments[index[i]])]
        torch.testing.assert_close(z_expert[i], expert(x[i : i + 1])[0])
        assert z_expert[i, 0] == assignments[index[i]]
    torch.testing.assert_close(z_base[:, 0], torch.full((8,), -1.0))
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        student.cluster_of(torch.tensor([3, 20]))


def test_teacher_arguments_and_assignments_are_validated():
    with pytest.raises(ValueError, match="together"):
        DnC(base_checkpoint="base.ckpt", **TINY)
    student = DnC(head_hidden_dim=4, **TINY)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        student.set_teachers(Constant([1.0, 0.0]), [Constant([1.0, 0.0])] * 2, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="no teachers"):
        student.compute_losses(([torch.randn(2, 3, 16, 16)] * 2, torch.zeros(2), torch.arange(2)))


def test_expert_steps_spend_n2_full_dataset_epochs():
    """N2 = 10 epochs of N = 500 images is 5000 passes; at 50 images a step, cluster 300 gets
    10 * 300 / 50 = 60 steps (3000 passes), clusters 100 get 20 (1000 each): 5000 in all. The old
    rule (round(N2 n_k / N) epochs of the cluster) gave 6, 2, 2 epochs: 2200 passes, 44 %."""
    assert expert_steps([300, 100, 100], 10, 50) == [60, 20, 20]
    # a cluster smaller than the batch is one batch per step: 10 * 30 / 30 = 10 steps of 30
    assert expert_steps([470, 30], 10, 50) == [94, 10]
    assert expert_steps([990, 10], 0.01, 64) == [1, 1]  # 0.15 and 0.01 steps round to 0: at least 1
    with pytest.raises(ValueError, match="expert_epochs=0"):
        expert_steps([3, 4], 0, 8)
    with pytest.raises(ValueError, match=r"\[3, 0\]"):
        expert_steps([3, 0], 10, 8)
    with pytest.raises(ValueError, match="batch_size=0"):
        expert_steps([3, 4], 1, 0)


def test_stage_warmup_is_a_fraction_of_the_stage():
    """10 warm-up epochs of a 1000-epoch stage is 1 %; a 4-epoch stage is capped at half warm-up;
    an explicit warmup_fraction is kept."""
    from lightning_ssl.methods.moclr import MoCLR

    assert with_stage_warmup({}, MoCLR, 1000)["warmup_fraction"] == pytest.approx(0.01)
    assert with_stage_warmup({"warmup_epochs": 2}, MoCLR, 8)["warmup_fraction"] == pytest.approx(0.25)
    assert with_stage_warmup({}, MoCLR, 4)["warmup_fraction"] == 0.5
    assert with_stage_warmup({"warmup_fraction": 0.2}, MoCLR, 4)["warmup_fraction"] == 0.2


# -- the pipeline end to end ------------------------------------------------------------------------


def cli_args(work_dir, clusters: int = 2) -> list[str]:
    return [
        "--data",
        "DigitsLT",
        "--data.batch_size",
        "16",
        "--data.eval_batch_size",
        "256",
        "--model.backbone",
        "resnet_tiny",
        "--model.proj_hidden_dim",
        "16",
        "--model.proj_output_dim",
        "8",
        "--distill.head_hidden_dim",
        "16",
        "--num_clusters",
        str(clusters),
        "--base_epochs",
        "1",
        "--expert_epochs",
        "0.25",
        "--distill_epochs",
        "1",
        "--work_dir",
        str(work_dir),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.limit_train_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--kmeans_backend",
        "torch",
    ]


def mtimes(work_dir) -> dict[str, int]:
    return {
        str(p.relative_to(work_dir)): p.stat().st_mtime_ns
        for p in work_dir.rglob("*")
        if p.is_file() and p.suffix in (".ckpt", ".npy", ".json")
    }


def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    from lightning_ssl.cli.dnc import run

    work = tmp_path / "dnc"
    assert run(cli_args(work)) == 0
    for stage in STAGES:
        assert json.loads((work / stage / "done.json").read_text())["stage"] == stage
    assignments = np.load(work / "cluster" / "assignments.npy")
    clusters = json.loads((work / "cluster" / "clusters.json").read_text())
    assert assignments.shape == (494,) and set(np.unique(assignments)) == {0, 1}  # digits-LT at 0.1: 494
    assert clusters["sizes"] == np.bincount(assignments).tolist() and clusters["backend"] == "torch"
    assert clusters["backend"] in BACKENDS and -1.0 <= clusters["objective"] <= 1.0
    assert clusters["feature_dim"] == 16  # the projector's hidden layer, not the 8-d output
    experts = json.loads((work / "experts" / "done.json").read_text())["artifacts"]
    assert experts["steps"] == expert_steps(clusters["sizes"], 0.25, 16) and experts["sizes"] == clusters["sizes"]
    for ckpt in ("base/model.ckpt", "experts/expert_0.ckpt", "experts/expert_1.ckpt", "distill/model.ckpt"):
        assert (work / ckpt).is_file()
    student = DnC.load_from_checkpoint(str(work / "distill" / "model.ckpt"))  # no teachers needed
    assert len(student.expert_heads) == 2 and student(torch.zeros(2, 3, 16, 16)).shape == (2, 128)

    before = mtimes(work)
    assert run(cli_args(work)) == 0  # everything finished: nothing is redone
    assert mtimes(work) == before

    capsys.readouterr()
    from lightning_ssl.cli.main import main

    assert main(["dnc", *cli_args(work), "--data.head_order", "permuted"]) == 2  # other data, same size: refused
    err = capsys.readouterr().err.strip()
    assert err.startswith("lssl dnc: DnC work dir ")
    assert len(err.splitlines()) == 1 and "data.hparams.head_order" in err and str(work) in err
    assert mtimes(work) == before  # nothing removed or rewritten


SWEEP = {
    "name": "dnc",
    "base": {
        "model": {"init_args": {"backbone": "resnet_tiny", "proj_hidden_dim": 16, "proj_output_dim": 8}},
        "data": {"class_path": "DigitsLT", "init_args": {"batch_size": 16, "eval_batch_size": 256}},
        "trainer": {"accelerator": "cpu", "limit_train_batches": 1},
    },
    "grid": {"method": ["DnC"]},
    "dnc": {
        "num_clusters": 2,
        "base_epochs": 1,
        "expert_epochs": 0.25,
        "distill_epochs": 1,
        "kmeans_backend": "torch",
        "distill": {"head_hidden_dim": 16},
    },
    "evaluation": {"linear_options": {"steps": 20}, "knn_k": 20},
}


def test_a_sweep_run_of_dnc_is_its_pipeline(tmp_path):
    """DnC in a sweep: the run's model config is the teachers' (MoCLR), the spec's dnc section is
    its options (in the id and the record), the stages go to <run folder>/dnc, and the distilled
    student is evaluated; bad options fail when the spec is loaded."""
    spec = spec_from_dict(SWEEP)
    (run,) = expand(spec)  # no floors: DnC's config is not one a floor is made from
    assert run.config["model"]["class_path"] == "lightning_ssl.methods.moclr.MoCLR"
    assert run.options == SWEEP["dnc"] and method_key(run) == "DnC"
    paths = SweepPaths.of(spec, tmp_path / "results", tmp_path / "work")
    assert run_one(run, spec, paths) == "done"
    record = json.loads(paths.result(run.run_id).read_text())
    assert record["pipeline"] == "lightning_ssl.methods.dnc_pipeline.DnCPipeline"
    assert record["pipeline_options"] == SWEEP["dnc"] and record["method_version"] == METHOD_VERSIONS["DnC"]
    work = paths.run_dir(run.run_id) / "dnc"
    assert record["train"]["dnc_stages"] == {stage: f"dnc/{stage}" for stage in STAGES}  # no machine paths
    assert all((work / stage / "done.json").is_file() for stage in STAGES)
    student = json.loads((work / "distill" / "done.json").read_text())["fingerprint"]["student_kwargs"]
    assert student["head_hidden_dim"] == 16 and student["proj_hidden_dim"] == 16  # its own, and the teachers'
    assert 0 <= record["metrics"]["linear_full/acc_top1"] <= 1 and record["train"]["devices"] == 1
    # the diagnosis reads the student's loss curve, which the distill stage's checkpoint keeps
    curve = stage_losses(work / "distill" / "model.ckpt")
    assert curve and all(math.isfinite(v) for v in curve)
    assert record["diagnostics"]["loss_trend"] == loss_trend(curve)

    for dnc, words in (
        ({"num_cluster": 2}, "dnc: unknown key(s) ['num_cluster']; valid keys: num_clusters"),
        ({"num_clusters": 0}, "dnc: num_clusters=0 must be >= 1"),
        ({"distill": {"heads": 3}}, "['heads'] are not options of the DnC student"),
    ):
        with pytest.raises(ValueError) as err:
            spec_from_dict({**SWEEP, "dnc": dnc})
        assert words in str(err.value)


def test_more_clusters_than_samples_is_refused_before_training(tmp_path):
    from datamodules.digits import DigitsLT

    pipeline = DnCPipeline(DigitsLT(), tmp_path / "dnc", num_clusters=1000, teacher_kwargs=TINY)
    with pytest.raises(ValueError, match=r"num_clusters=1000.*494"):
        pipeline.run()
    assert not (tmp_path / "dnc").exists()


# -- budget, exact resume, fingerprints, preemption (programmatic, one reference run) -------------


class CountImages(pl.Callback):
    """Images trained on per fit, keyed by the fit's folder (base, expert_k, distill)."""

    def __init__(self) -> None:
        self.images: dict[str, int] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        key = Path(trainer.default_root_dir).name
        self.images[key] = self.images.get(key, 0) + int(batch[2].numel())


EXPERT_EPOCHS = 0.25


def make_pipeline(work: Path, callbacks: list | None = None, **data: object) -> DnCPipeline:
    """A fresh datamodule and pipeline, as a new process would build them."""
    from datamodules.digits import DigitsLT

    trainer = dict(
        accelerator="cpu",
        devices=1,
        limit_train_batches=3,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )
    return DnCPipeline(
        DigitsLT(batch_size=16, eval_batch_size=256, **data),
        work,
        num_clusters=2,
        base_epochs=1,
        expert_epochs=EXPERT_EPOCHS,
        distill_epochs=1,
        teacher_kwargs=dict(TINY, lr=0.05),
        distill={"head_hidden_dim": 8},
        trainer_kwargs=trainer,
        kmeans_backend="torch",
    )


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_bitwise_equal(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{a.name}: {key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, CountImages]:
    """One uninterrupted run, counting the images each fit trains on."""
    work = tmp_path_factory.mktemp("dnc_reference")
    counter = CountImages()
    make_pipeline(work, callbacks=[counter]).run()
    return work, counter


def test_expert_image_passes_equal_the_budget(reference):
    """The experts' image passes sum to N2 x N within one batch per expert; each expert's to its
    share N2 x n_k (counted in the training loop, not from the recorded numbers)."""
    work, counter = reference
    sizes = json.loads((work / "cluster" / "clusters.json").read_text())["sizes"]
    record = json.loads((work / "experts" / "done.json").read_text())["artifacts"]
    n, batch = sum(sizes), 16
    for k, n_k in enumerate(sizes):
        assert abs(counter.images[f"expert_{k}"] - EXPERT_EPOCHS * n_k) <= batch / 2, (k, counter.images)
        assert counter.images[f"expert_{k}"] == record["image_passes"][k] == record["steps"][k] * batch
    total = sum(counter.images[f"expert_{k}"] for k in range(len(sizes)))
    assert abs(total - EXPERT_EPOCHS * n) <= batch * len(sizes) / 2
    assert record["budget_image_passes"] == EXPERT_EPOCHS * n == 123.5


@pytest.mark.parametrize("stop_after", ["base", "cluster", "experts"])
def test_resume_after_each_stage_is_bit_identical(reference, tmp_path, stop_after):
    """Stop after a stage (a kill between stages), then resume with a fresh datamodule and
    pipeline and another global RNG state (a new process): every output equals the uninterrupted
    run's bit for bit."""
    ref, _ = reference
    work = tmp_path / "dnc"
    make_pipeline(work).run(until=stop_after)
    done = STAGES[: STAGES.index(stop_after) + 1]
    assert all((work / s / "done.json").is_file() for s in done)
    assert not any((work / s).exists() for s in STAGES if s not in done)
    torch.manual_seed(1234), np.random.seed(99), random.seed(7)  # a different process history
    make_pipeline(work).run()
    assert np.array_equal(np.load(work / "cluster" / "assignments.npy"), np.load(ref / "cluster" / "assignments.npy"))
    for ckpt in ("base/model.ckpt", "experts/expert_0.ckpt", "experts/expert_1.ckpt", "distill/model.ckpt"):
        assert_bitwise_equal(work / ckpt, ref / ckpt)


@pytest.mark.parametrize(
    "data, key", [({"head_order": "permuted"}, "data.hparams.head_order"), ({"seed": 1}, "data.indices_sha1")]
)
def test_other_data_of_the_same_size_is_refused(reference, data, key):
    """Another head order or selection seed gives 494 images too: the base stage refuses them,
    naming the differing keys and the work dir, and leaves every file in place."""
    work, _ = reference
    before = mtimes(work)
    with pytest.raises(StageMismatchError, match=rf"{work}.*'base'.*{key}"):
        make_pipeline(work, **data).run()
    assert mtimes(work) == before


def test_changed_stage_option_is_refused(reference):
    work, _ = reference
    pipeline = make_pipeline(work)
    pipeline.distill_epochs = 2
    with pytest.raises(StageMismatchError, match=r"'distill'.*differing: epochs"):
        pipeline.run()


def test_sigterm_keeps_finished_stages_and_exits_143(tmp_path):
    """SIGTERM during the first expert's first step (of at least 2: N2 = 1 epoch of clusters of
    more than 16 images): `lssl dnc` exits 143, base and cluster stay done, the experts stage is
    not marked done (resuming redoes it from its start, as the resume test after `cluster`)."""
    work = tmp_path / "dnc"
    args = [*cli_args(work), "--expert_epochs", "1"]
    script = f"""
import os, signal, sys
import pytorch_lightning as pl
from lightning_ssl.cli import dnc
from lightning_ssl.methods import dnc_pipeline

class Kill(pl.Callback):
    def on_train_batch_start(self, trainer, *args):
        if os.path.basename(trainer.default_root_dir) == "expert_0" and trainer.global_step == 0:
            os.kill(os.getpid(), signal.SIGTERM)

original = dnc_pipeline.DnCPipeline.__post_init__
def with_kill(self):
    self.trainer_kwargs = {{**self.trainer_kwargs, "callbacks": [Kill()]}}
    original(self)
dnc_pipeline.DnCPipeline.__post_init__ = with_kill
sys.exit(dnc.run({args!r}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 143, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "preempted (signal 15)" in proc.stderr
    assert (work / "base" / "done.json").is_file() and (work / "cluster" / "done.json").is_file()
    sizes = json.loads((work / "cluster" / "clusters.json").read_text())["sizes"]
    assert min(sizes) > 16  # so the killed expert had >= 2 steps: the kill was not at its end
    assert not (work / "experts" / "done.json").exists() and not (work / "distill").exists()


class CrashAt(pl.Callback):
    """Stands in for a kill: raises at the first batch of the fit in folder ``name`` (no save)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_train_batch_start(self, trainer, *args) -> None:
        if Path(trainer.default_root_dir).name == self.name:
            raise KeyError("killed")


def test_a_stage_interrupted_mid_way_continues_from_its_checkpoints(reference, tmp_path):
    """A crash in the second expert's fit: the stage is not done, the first expert's epoch
    checkpoints are on disk; the resumed pipeline does not retrain the first expert (no images
    counted for it) and every output equals the uninterrupted run's bit for bit."""
    ref, _ = reference
    work = tmp_path / "dnc"
    with pytest.raises(KeyError):
        make_pipeline(work, callbacks=[CrashAt("expert_1")]).run()
    assert not (work / "experts" / "done.json").exists()
    assert (work / "experts" / "expert_0" / "checkpoints" / "last.ckpt").is_file()
    assert (work / "experts" / "started.json").is_file()
    counter = CountImages()
    make_pipeline(work, callbacks=[counter]).run()
    assert "expert_0" not in counter.images and counter.images["expert_1"] > 0
    assert "base" not in counter.images
    for ckpt in ("base/model.ckpt", "experts/expert_0.ckpt", "experts/expert_1.ckpt", "distill/model.ckpt"):
        assert_bitwise_equal(work / ckpt, ref / ckpt)


def test_a_stage_started_with_other_settings_is_redone(reference, tmp_path):
    """An interrupted stage whose settings changed since is cleared, not continued."""
    work = tmp_path / "dnc"
    with pytest.raises(KeyError):
        make_pipeline(work, callbacks=[CrashAt("expert_1")]).run()
    pipeline = make_pipeline(work)
    pipeline.expert_epochs = 0.5
    assert not pipeline._started_with_these_settings("experts")
    assert make_pipeline(work)._started_with_these_settings("experts")
