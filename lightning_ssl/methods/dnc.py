"""Divide-and-Contrast's distillation student (Tian, Hénaff, van den Oord; ICCV 2021, §3.3).

A fresh student (backbone f and projector g of MoCLR's shape) regresses, from its projector
output z, the L2-normalised projector outputs of frozen teachers on the *same* augmented view:
the base model (head r_b) and the expert of the image's own cluster (head r_k). Each image is
routed to its expert by its ``index`` in the pre-training set, through a buffer of cluster
assignments held identically on every rank (no cross-rank work is needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_ssl.class_path import import_class
from lightning_ssl.heads import mlp
from lightning_ssl.losses.distill import regression_distill
from lightning_ssl.methods.base import Batch, LossOutput, SSLMethod
from lightning_ssl.methods.declared_views import Views, init_option
from lightning_ssl.methods.method_card import MethodCard
from lightning_ssl.methods.moclr import moclr_projector

DEFAULT_TEACHER = "lightning_ssl.methods.moclr.MoCLR"


class ProjectorOutput(nn.Module):
    """A frozen teacher as ``image -> projector(backbone(image))`` (the target z of §3.3), in eval mode."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.method.eval()
        for p in self.method.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> ProjectorOutput:
        return super().train(False)  # a teacher never updates its BN statistics

    def forward(self, x: Tensor) -> Tensor:
        return self.method.projector(self.method.backbone(x).flatten(1))


def load_teacher(checkpoint: str | Path, teacher_class: str = DEFAULT_TEACHER) -> ProjectorOutput:
    """A frozen teacher from a Lightning checkpoint of ``teacher_class`` (on the CPU)."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"teacher checkpoint {checkpoint} does not exist")
    method = import_class(teacher_class).load_from_checkpoint(str(checkpoint), map_location="cpu")
    return ProjectorOutput(method)


class DnC(SSLMethod):
    """The DnC student: backbone + projector + K+1 regression heads, distilled from frozen teachers.

    The teachers are not submodules: they are not trained, not wrapped by DDP and not saved in
    this module's checkpoints (they are re-loaded from the checkpoint files named in the
    hyper-parameters). Build without teachers to load a finished student for evaluation.

    A sweep run of DnC is the whole pipeline (``pipeline``: base, clustering, experts, this
    student), configured by the teachers' options and the spec's ``dnc`` section.
    """

    pipeline = "lightning_ssl.methods.dnc_pipeline.DnCPipeline"

    card = MethodCard(
        name="DnC",
        paper="Tian, Hénaff, van den Oord, Divide and Contrast: Self-supervised Learning from "
        "Uncurated Data, ICCV 2021",
        defaults_from="§3.1 (projector 4096-256 with BN), §3.3 (regression heads 256-4096-256, "
        "loss ½‖r_b(z)−z_b‖² + ½‖r_k(z)−z_k‖², normalised targets, here divided by the width d), Table 12",
    )

    def __init__(
        self,
        base_checkpoint: str | None = None,
        expert_checkpoints: list[str] | None = None,
        assignments: str | None = None,
        teacher_class: str = DEFAULT_TEACHER,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        head_hidden_dim: int = 4096,
        num_large_views: int = 2,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            base_checkpoint: checkpoint of the base model (stage 1); ``None`` (with no experts and
                no assignments) builds the student alone; :meth:`set_teachers` attaches teachers.
                The teachers are read when fitting starts, so a finished student loads for
                evaluation without them.
            expert_checkpoints: checkpoints of the K cluster experts, in cluster order (stage 3).
            assignments: ``.npy`` file of the cluster id of every pre-training image (stage 2).
            teacher_class: class path of the teachers' LightningModule (MoCLR in the paper, §3.1;
                any method with ``backbone`` and ``projector`` works, App. G).
            proj_hidden_dim: projector hidden width (§3.1: 4096), as the teachers'.
            proj_output_dim: projector output width z (§3.1: 256), as the teachers'.
            head_hidden_dim: hidden width of each regression head (§3.3: 4096).
            num_large_views: augmented views per image; the per-view losses are averaged (§3.3
                uses 2, which only matches the epoch accounting of the other stages).
            **kwargs: backbone and optimisation options of :class:`SSLMethod` (§3.4: LARS, base lr
                0.3, raised to 0.35-0.45 for distillations shorter than 500 epochs).
        """
        super().__init__(**kwargs)
        for name, value in (
            ("proj_hidden_dim", proj_hidden_dim),
            ("proj_output_dim", proj_output_dim),
            ("head_hidden_dim", head_hidden_dim),
            ("num_large_views", num_large_views),
        ):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        experts = list(expert_checkpoints or [])
        if (base_checkpoint is None) != (not experts) or (assignments is None) != (not experts):
            raise ValueError(
                "base_checkpoint, expert_checkpoints (K >= 1 files) and assignments are "
                f"given together or not at all; got base_checkpoint={base_checkpoint!r}, "
                f"{len(experts)} expert checkpoints, assignments={assignments!r}"
            )
        self.projector = moclr_projector(self.feature_dim, proj_hidden_dim, proj_output_dim)
        self.base_head: nn.Module | None = self._head() if experts else None
        self.expert_heads = nn.ModuleList(self._head() for _ in experts)
        self._teachers: list[nn.Module] = []  # [base, expert_0, ..., expert_{K-1}], not submodules
        self.register_buffer("assignments", torch.zeros(0, dtype=torch.long), persistent=False)

    @classmethod
    def views_needed(cls, options: Mapping[str, Any] | None = None) -> Views:
        """``num_large_views`` large crops, each regressed onto the teachers' outputs (§3.3: 2)."""
        return Views(num_large_views=int(init_option(cls, options, "num_large_views")))

    def _head(self) -> nn.Module:
        d, h = self.hparams.proj_output_dim, self.hparams.head_hidden_dim
        return mlp([d, h, d])  # 256 -> 4096 (BN, ReLU) -> 256, no final BN (§3.3)

    def load_teachers(self) -> None:
        """Load the teachers and assignments named in the hyper-parameters, once (at the start of
        fit, or at the first loss): a student loaded only to be evaluated never reads them."""
        hp = self.hparams
        if self._teachers or hp.base_checkpoint is None:
            return
        self.set_teachers(
            load_teacher(hp.base_checkpoint, hp.teacher_class),
            [load_teacher(path, hp.teacher_class) for path in hp.expert_checkpoints],
            torch.from_numpy(np.load(hp.assignments)),
        )

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.load_teachers()

    def set_teachers(self, base: nn.Module, experts: Sequence[nn.Module], assignments: Tensor) -> None:
        """Attach frozen teachers (``image -> projector output``: :class:`ProjectorOutput`) and the
        cluster id of every pre-training index. A student built without checkpoints gets its K+1
        regression heads here (before the optimiser is configured)."""
        assignments = torch.as_tensor(assignments).long().flatten()
        k = len(experts)
        if k < 1:
            raise ValueError("DnC needs at least one expert (K >= 1)")
        if self.base_head is not None and len(self.expert_heads) != k:
            raise ValueError(f"this student has {len(self.expert_heads)} expert heads, got {k} experts")
        if assignments.numel() == 0 or assignments.min() < 0 or assignments.max() >= k:
            found = (int(assignments.min()), int(assignments.max())) if assignments.numel() else "none"
            raise ValueError(f"cluster assignments must lie in [0, {k}) for K={k} experts, got range {found}")
        for teacher in (base, *experts):
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self._teachers = [base, *experts]
        self.assignments = assignments.to(self.assignments.device)
        if self.base_head is None:
            device = next(self.projector.parameters()).device
            self.base_head = self._head().to(device)
            self.expert_heads = nn.ModuleList(self._head() for _ in range(k)).to(device)

    def cluster_of(self, index: Tensor) -> Tensor:
        """The cluster id of each pre-training ``index`` (the routing of batch rows to experts)."""
        n = self.assignments.numel()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(
                f"sample index out of range [0, {n}) of the cluster assignments: "
                f"got [{int(index.min())}, {int(index.max())}]"
            )
        return self.assignments[index.to(self.assignments.device)]

    @torch.no_grad()
    def teacher_targets(self, x: Tensor, cluster: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_b, z_k)``: the base's and each row's own expert's projector outputs on ``x``.
        Expert k runs only on the rows of cluster k (docs/methods.md §6.4: batch routing)."""
        for teacher in self._teachers:  # not submodules: follow the student's device here
            param = next(teacher.parameters(), None)
            if param is not None and param.device != x.device:
                teacher.to(x.device)
        z_base = self._run_teacher(self._teachers[0], x)
        z_expert = torch.empty_like(z_base)
        for k, expert in enumerate(self._teachers[1:]):
            rows = (cluster == k).nonzero().flatten()
            if rows.numel():
                z_expert[rows] = self._run_teacher(expert, x[rows]).to(z_expert.dtype)
        return z_base, z_expert

    @staticmethod
    def _run_teacher(teacher: nn.Module, x: Tensor) -> Tensor:
        """``teacher(x)``, with ``x`` cast to the teacher's dtype (a ``16-true`` student casts its
        inputs, not the teachers; under autocast the cast is a no-op)."""
        param = next(teacher.parameters(), None)
        return teacher(x if param is None or not x.is_floating_point() else x.to(param.dtype))

    def compute_losses(self, batch: Batch) -> LossOutput:
        self.load_teachers()
        if not self._teachers:
            raise ValueError(
                "DnC has no teachers: build it with base_checkpoint, expert_checkpoints "
                "and assignments, or call set_teachers(...)"
            )
        views, _, index = batch
        views = views[: self.hparams.num_large_views]  # the base checked their number (check_views)
        x = torch.cat(views)
        cluster = self.cluster_of(index).to(x.device).repeat(len(views))
        z_base, z_expert = self.teacher_targets(x, cluster)
        feats = self(x)
        z = self.projector(feats)
        # every head sees every row (our choice: BN statistics over the whole batch, and every
        # head takes part in the graph, as DDP requires); each row keeps its own expert's output
        expert_preds = torch.stack([head(z) for head in self.expert_heads])
        pred_expert = expert_preds[cluster, torch.arange(z.shape[0], device=z.device)]
        # the paper's 1/2 |r(z) - z_t/|z_t||^2, divided by the output width d (docs/methods.md §6.6): the
        # heads' 4096-wide BN+ReLU hidden layer makes the sum's curvature in their last layer about 650,
        # so plain SGD diverged at any lr above 0.003 (NaN after 6 steps at lr 0.3); the mean over d is
        # stable at lr 1.0, and LARS, the paper's optimiser, is invariant to the constant
        d = z.shape[1]
        loss_base = regression_distill(self.base_head(z), z_base) / d
        loss_expert = regression_distill(pred_expert, z_expert) / d
        losses = (loss_base + loss_expert).view(len(views), -1)
        b = views[0].shape[0]
        logs = {"distill_base": loss_base.detach().mean(), "distill_expert": loss_expert.detach().mean()}
        return LossOutput(losses, feats[:b].detach(), embeddings=z.view(len(views), b, -1), logs=logs)
