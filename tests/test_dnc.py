"""Divide-and-Contrast: the student's heads and loss by hand, routing by brute force, and the
resumable four-stage pipeline end to end on the embedded digits (Tian et al., ICCV 2021)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lightning_ssl.cluster.kmeans import BACKENDS
from lightning_ssl.dnc_pipeline import STAGES, DnCPipeline, expert_epochs, write_json_atomic
from lightning_ssl.methods.dnc import DnC

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
    """½‖r_b(z) − z_b/‖z_b‖‖² + ½‖r_k(z) − z_k/‖z_k‖‖², with constant heads and teachers:
    base (3,4)->(.6,.8) vs r_b=(1,0): 0.4; expert 0 (0,5)->(0,1) vs r_0=(0,0): 0.5;
    expert 1 (-2,0)->(-1,0) vs r_1=(1,1): 2.5. Cluster-0 rows lose 0.9, cluster-1 rows 2.9."""
    student = DnC(head_hidden_dim=4, **TINY)
    experts = [Constant([0.0, 5.0]), Constant([-2.0, 0.0])]
    assignments = torch.tensor([1, 0, 0, 1, 1, 0])
    student.set_teachers(Constant([3.0, 4.0]), experts, assignments)
    for head, bias in zip([student.base_head, *student.expert_heads], [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]):
        constant_head(head, bias)
    index = torch.tensor([5, 3, 0, 1])  # clusters 0, 1, 1, 0
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = student.compute_losses((views, torch.full((4,), -1), index))
    expected = torch.tensor([0.9, 2.9, 2.9, 0.9]).expand(2, 4)
    torch.testing.assert_close(out.losses, expected)
    assert experts[0].rows_seen == 4 and experts[1].rows_seen == 4  # 2 rows x 2 views each
    torch.testing.assert_close(out.logs["distill_base"], torch.tensor(0.4))


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


def test_expert_epochs_proportional_to_cluster_size():
    assert expert_epochs([300, 100, 100], 10) == [6, 2, 2]
    assert expert_epochs([990, 10], 3) == [3, 1]  # 0.03 epochs rounds to 0: at least 1
    assert expert_epochs([5], 1500) == [1500]
    with pytest.raises(ValueError, match="expert_epochs=0"):
        expert_epochs([3, 4], 0)
    with pytest.raises(ValueError, match=r"\[3, 0\]"):
        expert_epochs([3, 0], 10)


def test_write_json_atomic(tmp_path):
    target = tmp_path / "stage" / "done.json"
    write_json_atomic(target, {"stage": "base", "x": [1, 2]})
    assert json.loads(target.read_text()) == {"stage": "base", "x": [1, 2]}
    assert [p.name for p in target.parent.iterdir()] == ["done.json"]  # no temporary left


# -- the pipeline end to end ------------------------------------------------------------------------

def cli_args(work_dir, clusters: int = 2) -> list[str]:
    return [
        "--data", "DigitsLT", "--data.batch_size", "16", "--data.eval_batch_size", "256",
        "--model.backbone", "resnet_tiny", "--model.proj_hidden_dim", "16", "--model.proj_output_dim", "8",
        "--distill.head_hidden_dim", "16", "--num_clusters", str(clusters),
        "--base_epochs", "1", "--expert_epochs", "1", "--distill_epochs", "1", "--work_dir", str(work_dir),
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.limit_train_batches", "1",
        "--trainer.enable_progress_bar", "false", "--kmeans_backend", "torch",
    ]


def mtimes(work_dir) -> dict[str, int]:
    return {str(p.relative_to(work_dir)): p.stat().st_mtime_ns
            for p in work_dir.rglob("*") if p.is_file() and p.suffix in (".ckpt", ".npy", ".json")}


def test_pipeline_end_to_end_and_resume(tmp_path):
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
    assert experts["epochs"] == [1, 1] and experts["sizes"] == clusters["sizes"]
    for ckpt in ("base/model.ckpt", "experts/expert_0.ckpt", "experts/expert_1.ckpt", "distill/model.ckpt"):
        assert (work / ckpt).is_file()
    student = DnC.load_from_checkpoint(str(work / "distill" / "model.ckpt"))  # no teachers needed
    assert len(student.expert_heads) == 2 and student(torch.zeros(2, 3, 16, 16)).shape == (2, 128)

    before = mtimes(work)
    assert run(cli_args(work)) == 0  # everything finished: nothing is redone
    assert mtimes(work) == before

    (work / "experts" / "done.json").unlink()
    assert run(cli_args(work)) == 0  # stages 3 and 4 are redone, 1 and 2 kept
    after = mtimes(work)
    for kept in ("base/model.ckpt", "base/done.json", "cluster/assignments.npy", "cluster/done.json"):
        assert after[kept] == before[kept], kept
    for redone in ("experts/expert_0.ckpt", "experts/expert_1.ckpt", "experts/done.json",
                   "distill/model.ckpt", "distill/done.json"):
        assert after[redone] > before[redone], redone


def test_more_clusters_than_samples_is_refused_before_training(tmp_path):
    from datamodules.digits import DigitsLT

    pipeline = DnCPipeline(DigitsLT(), tmp_path / "dnc", num_clusters=1000, teacher_kwargs=TINY)
    with pytest.raises(ValueError, match=r"num_clusters=1000.*494"):
        pipeline.run()
    assert not (tmp_path / "dnc").exists()
