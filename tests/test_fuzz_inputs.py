"""Fuzz the command line with the bad values a careful user tries: every sub-command, every
datamodule option, the methods' and the probe's options, sweep specs, DnC options and bad files.

For each input the result is either

* a refusal: exit status 2 and exactly one line on stderr, ``lssl <cmd>: <message>``, naming the
  input (the expected text below), with no traceback, and before any training; or
* a correct result: exit status 0 and no traceback.

Everything runs in-process through :func:`lightning_ssl.cli.main.main` (a subprocess only for a
closed pipe), on tiny data, so the whole file takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl

from lightning_ssl.cli.main import COMMANDS, main
from tests.fixtures import write_class_folders

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--model.backbone",
    "resnet_tiny",
    "--model.proj_hidden_dim",
    "16",
    "--model.proj_output_dim",
    "8",
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "1",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.accelerator",
    "cpu",
    "--data.batch_size",
    "16",
    "--data.eval_batch_size",
    "256",
    "--seed_everything",
    "0",
]
FIT = ["fit", "--model", "SimCLR", "--data", "DigitsLT", *FAST]
DNC = [
    "dnc",
    "--data",
    "DigitsLT",
    "--model.backbone",
    "resnet_tiny",
    "--num_clusters",
    "2",
    "--base_epochs",
    "1",
    "--expert_epochs",
    "1",
    "--distill_epochs",
    "1",
    "--work_dir",
    "dnc",
]
SPEC = {
    "name": "fz",
    "base": {
        "model": {"init_args": {"backbone": "resnet_tiny"}},
        "data": {"class_path": "DigitsLT"},
        "trainer": {"max_epochs": 1, "limit_train_batches": 1},
    },
    "grid": {"method": ["SimCLR", "MoCoV2"]},
    "floors": [],
}


def spec(name: str, **changes: Any) -> str:
    """A sweep spec file ``<name>.yaml`` holding :data:`SPEC` with ``changes`` (``None`` deletes)."""
    body = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    Path(f"{name}.yaml").write_text(json.dumps(body))  # JSON is YAML
    return f"{name}.yaml"


# (argv, expected): "ok", or the text the one-line refusal must contain
CASES: dict[str, tuple[list[str], str]] = {
    # -- the command line itself -------------------------------------------------------------------
    "no command": ([], "no command given"),
    "unknown command": (["fitt"], "unknown command 'fitt'; did you mean 'fit'?"),
    "help of nothing known": (["help", "SimCRL"], "'SimCRL' is not a method or dataset name"),
    "help of a missing module": (["help", "no_such_module.Method"], "cannot import 'no_such_module.Method'"),
    "help": (["help", "DigitsLT"], "ok"),
    # -- lssl data -----------------------------------------------------------------------------------
    "data alone": (["data"], "no data command given"),
    "data stats without a name": (["data", "stats"], "no dataset named"),
    "data stats digits": (["data", "stats", "digits"], "unknown dataset 'digits'; did you mean digits_lt?"),
    "data card unknown": (["data", "card", "mnist"], "unknown dataset 'mnist'"),
    "data stats unknown option": (["data", "stats", "digits_lt", "--data.ratio", "0.1"], "unrecognized arguments"),
    "data stats ratio text": (
        ["data", "stats", "digits_lt", "--data.imbalance_ratio", "abc"],
        "--data.imbalance_ratio 'abc': expected float",
    ),
    "data stats subsample 0": (
        ["data", "stats", "digits_lt", "--data.subsample", "0"],
        "subsample=0.0 is outside (0, 1]",
    ),
    "data stats plot into a missing folder": (
        ["data", "stats", "digits_lt", "--plot", "nowhere/x.png"],
        "No such file or directory",
    ),
    "data stats digits_lt": (["data", "stats", "digits_lt"], "ok"),
    "data card": (["data", "card", "digits_lt"], "ok"),
    "own folder, default profile": (["data", "stats", "image_folder_lt", "--data.root", "good"], "ok"),
    "own folder, exp profile too steep": (
        ["data", "stats", "image_folder_lt", "--data.root", "good", "--data.profile", "exp"],
        "leaves class(es) [1, 2] empty",
    ),
    "own folder, ratio without profile": (
        ["data", "stats", "image_folder_lt", "--data.root", "good", "--data.imbalance_ratio", "0.1"],
        "pass --data.profile exp",
    ),
    "own folder, missing": (
        ["data", "stats", "image_folder_lt", "--data.root", "nowhere"],
        "image folder nowhere not found",
    ),
    "own folder, no root": (["data", "stats", "image_folder_lt"], "data.root"),
    "bad images found when built": (
        ["data", "stats", "image_folder_lt", "--data.root", "bad"],
        "4 of 16 images are bad",
    ),
    "bad images skipped on request": (
        ["data", "stats", "image_folder_lt", "--data.root", "bad", "--data.bad_images", "skip"],
        "ok",
    ),
    "bad_images unknown": (
        ["data", "stats", "image_folder_lt", "--data.root", "good", "--data.bad_images", "ignore"],
        "unknown bad_images 'ignore'",
    ),
    "unlabeled folder with bad images": (["data", "stats", "unlabeled_folder", "--data.root", "bad"], "cannot decode"),
    "fashion-mnist not there": (
        ["data", "stats", "fashion_mnist_lt", "--data.root", "nowhere"],
        "Fashion-MNIST idx files",
    ),
    "cifar sdclr with a profile option": (
        ["data", "stats", "cifar10_lt", "--data.protocol", "sdclr", "--data.imbalance_ratio", "0.1"],
        "protocol='sdclr' reads SDCLR's fixed",
    ),
    # -- lssl fit: datamodule options --------------------------------------------------------------
    "imbalance_ratio 0": ([*FIT, "--data.imbalance_ratio", "0"], "imbalance_ratio=0.0 is outside (0, 1]"),
    "imbalance_ratio 2": ([*FIT, "--data.imbalance_ratio", "2"], "imbalance_ratio=2.0 is outside (0, 1]"),
    "imbalance_ratio -1": ([*FIT, "--data.imbalance_ratio", "-1"], "imbalance_ratio=-1.0 is outside (0, 1]"),
    "imbalance_ratio nan": ([*FIT, "--data.imbalance_ratio", ".nan"], "imbalance_ratio=nan is outside (0, 1]"),
    "imbalance_ratio text": ([*FIT, "--data.imbalance_ratio", "nan"], "--data.imbalance_ratio 'nan': expected float"),
    "imbalance_ratio too steep": ([*FIT, "--data.imbalance_ratio", "0.001"], "leaves class(es)"),
    "subsample 0": ([*FIT, "--data.subsample", "0"], "subsample=0.0 is outside (0, 1]"),
    "subsample 1.5": ([*FIT, "--data.subsample", "1.5"], "subsample=1.5 is outside (0, 1]"),
    "profile zipf": ([*FIT, "--data.profile", "zipf"], "unknown profile 'zipf'; valid: exp, step, pareto, balanced"),
    "head_order random": ([*FIT, "--data.head_order", "random"], "unknown head_order 'random'"),
    "data seed -1": ([*FIT, "--data.seed", "-1"], "seed=-1 must be an integer in [0, 2**32 - 1]"),
    "img_max 0": ([*FIT, "--data.img_max", "0"], "img_max=0.0 must be a finite number > 0"),
    "img_max above the data": ([*FIT, "--data.img_max", "1000"], "pass --data.img_max 122 or less"),
    "few_shot 0": ([*FIT, "--data.few_shot", "[0]"], "few_shot=0 must be an integer >= 1"),
    "few_shot above the data": ([*FIT, "--data.few_shot", "[500]"], "fewer than few_shot=500"),
    "few_shot twice": ([*FIT, "--data.few_shot", "[10, 10]"], "lists a probe set twice"),
    "batch_size 0": ([*FIT, "--data.batch_size", "0"], "batch_size=0 must be an integer >= 1"),
    "batch_size -5": ([*FIT, "--data.batch_size", "-5"], "batch_size=-5 must be an integer >= 1"),
    "batch_size text": ([*FIT, "--data.batch_size", "abc"], "--data.batch_size 'abc': expected int or None"),
    "eval_batch_size 0": ([*FIT, "--data.eval_batch_size", "0"], "eval_batch_size=0 must be an integer >= 1"),
    "num_workers -1": ([*FIT, "--data.num_workers", "-1"], "num_workers=-1 must be an integer >= 0"),
    "image_size 0": ([*FIT, "--data.image_size", "0"], "image_size=0 must be an integer >= 4"),
    "small_size above image_size": ([*FIT, "--data.small_size", "64"], "small_size=64 is larger than image_size=16"),
    "num_small_views -1": ([*FIT, "--data.num_small_views", "-1"], "num_small_views=-1 must be an integer >= 0"),
    "num_large_views 0": ([*FIT, "--data.num_large_views", "0"], "--data.num_large_views 0 contradicts --model SimCLR"),
    "num_large_views 0 alone": (
        ["data", "stats", "digits_lt", "--data.num_large_views", "0"],
        "num_large_views=0 must be an integer >= 1",
    ),
    "recipe unknown": ([*FIT, "--data.recipe", "autoaugment"], "unknown recipe 'autoaugment'"),
    "group_rule unknown": ([*FIT, "--data.group_rule", "halves"], "unknown group_rule 'halves'"),
    "view_seed -1": ([*FIT, "--data.view_seed", "-1"], "view_seed=-1 must be an integer in [0, 2**32 - 1]"),
    "balanced_twin maybe": ([*FIT, "--data.balanced_twin", "maybe"], "--data.balanced_twin 'maybe': expected bool"),
    "unknown data option": ([*FIT, "--data.imbalance", "0.1"], "DigitsLT has no option 'imbalance'"),
    "unknown dataset": ([*FIT, "--data", "DigitLT"], "unknown dataset 'DigitLT'"),
    "resident file data": (
        [
            "fit",
            "--model",
            "SimCLR",
            "--data",
            "ImageFolderLT",
            "--data.root",
            "good",
            "--data.resident",
            "true",
            *FAST,
        ],
        "resident=True needs an in-memory dataset",
    ),
    "fit on bad images": (
        ["fit", "--model", "SimCLR", "--data", "ImageFolderLT", "--data.root", "bad", "--data.image_size", "8", *FAST],
        "cannot decode image",
    ),
    # -- lssl fit: method options ------------------------------------------------------------------
    "lr 0": ([*FIT, "--model.lr", "0"], "lr=0.0 must be > 0"),
    "lr -0.1": ([*FIT, "--model.lr", "-0.1"], "lr=-0.1 must be > 0"),
    "lr nan": ([*FIT, "--model.lr", ".nan"], "lr=nan must be > 0 and finite"),
    "lr inf": ([*FIT, "--model.lr", ".inf"], "lr=inf must be > 0 and finite"),
    "lr text": ([*FIT, "--model.lr", "fast"], "--model.lr 'fast': expected float"),
    "weight_decay -1": ([*FIT, "--model.weight_decay", "-1"], "weight_decay=-1.0 must be >= 0"),
    "momentum 1.5": ([*FIT, "--model.momentum", "1.5"], "momentum=1.5 must be in [0, 1)"),
    "warmup_epochs -1": ([*FIT, "--model.warmup_epochs", "-1"], "warmup_epochs=-1.0 must be >= 0"),
    "warmup_fraction 1.5": ([*FIT, "--model.warmup_fraction", "1.5"], "warmup_fraction=1.5 must be in [0, 1)"),
    "final_lr above lr": ([*FIT, "--model.final_lr", "10"], "final_lr=10.0 must be in [0, lr=0.3]"),
    "optimizer adam": ([*FIT, "--model.optimizer", "adam"], "unknown optimizer 'adam'"),
    "nonfinite maybe": ([*FIT, "--model.nonfinite", "maybe"], "unknown nonfinite='maybe'"),
    "backbone unknown": ([*FIT, "--model.backbone", "resnet_huge"], "unknown backbone 'resnet_huge'"),
    "model image_size 0": ([*FIT, "--model.image_size", "0"], "image_size=0 must be an integer >= 1"),
    "in_chans 0": ([*FIT, "--model.in_chans", "0"], "in_chans=0 must be an integer >= 1"),
    "projector width 0": ([*FIT, "--model.proj_output_dim", "0"], "proj_output_dim=0 must be an integer >= 1"),
    "temperature 0": ([*FIT, "--model.temperature", "0"], "temperature=0.0 must be > 0"),
    "temperature nan": ([*FIT, "--model.temperature", ".nan"], "temperature=nan is not a finite number"),
    "num_large_views 1": (
        [*FIT, "--model.num_large_views", "1"],
        "num_large_views=1: contrastive learning needs at least 2 views",
    ),
    "sam rho -1": ([*FIT, "--model.sam.rho", "-1"], "sam.rho=-1.0 must be > 0"),
    "sam weights unknown": (
        [*FIT, "--model.sam.rho", "0.05", "--model.sam.weights", "labels"],
        "unknown sam.weights 'labels'",
    ),
    "unknown method option": ([*FIT, "--model.temprature", "0.2"], "SimCLR has no option 'temprature'"),
    "unknown method": ([*FIT, "--model", "SimCRL"], "unknown method 'SimCRL'"),
    "method from a missing module": ([*FIT, "--model", "my_missing_module.MyMethod"], "my_missing_module"),
    "MoCo queue -1": ([*FIT, "--model", "MoCoV2", "--model.queue_size", "-1"], "queue_size=-1 must be >= 0"),
    "MoCo momentum 1.5": ([*FIT, "--model", "MoCoV2", "--model.base_momentum", "1.5"], "0 <= base_momentum"),
    "SwAV prototypes 0": ([*FIT, "--model", "SwAV", "--model.num_prototypes", "0"], "num_prototypes >= 1"),
    "SwAV sinkhorn 0": ([*FIT, "--model", "SwAV", "--model.sinkhorn_iterations", "0"], "sinkhorn_iterations=0"),
    "SwAV views contradict": (
        [*FIT, "--model", "SwAV", "--model.num_small_views", "2", "--data.num_small_views", "4"],
        "--data.num_small_views 4 contradicts --model SwAV",
    ),
    "SimSiam predictor 0": ([*FIT, "--model", "SimSiam", "--model.pred_hidden_dim", "0"], "pred_hidden_dim=0"),
    "UOTA start -1": ([*FIT, "--model", "UOTASwAV", "--model.uota_start_epoch", "-1"], "uota_start_epoch"),
    "UOTA tau 0": ([*FIT, "--model", "UOTASwAV", "--model.uota_tau", "0"], "tau=0.0 must be > 0"),
    "MTTV low above high": (
        [*FIT, "--model", "MTTV", "--model.low", "0.9", "--model.high", "0.1"],
        "need 0 <= low < high",
    ),
    "MoCLR momentum 2": ([*FIT, "--model", "MoCLR", "--model.base_momentum", "2"], "0 <= base_momentum"),
    "Supervised smoothing 1.5": (
        [*FIT, "--model", "Supervised", "--model.label_smoothing", "1.5"],
        "label_smoothing=1.5 must be in [0, 1)",
    ),
    # -- lssl fit: trainer and run options ---------------------------------------------------------
    "max_epochs 0": ([*FIT, "--trainer.max_epochs", "0"], "--trainer.max_epochs 0: a run needs at least one epoch"),
    "max_epochs -1": ([*FIT, "--trainer.max_epochs", "-1"], "--trainer.max_epochs -1 means no epoch limit"),
    "max_epochs -2": ([*FIT, "--trainer.max_epochs", "-2"], "--trainer.max_epochs -2: a run needs at least one"),
    "max_epochs text": ([*FIT, "--trainer.max_epochs", "ten"], "--trainer.max_epochs 'ten'"),
    "max_steps 0": ([*FIT, "--trainer.max_steps", "0"], "--trainer.max_steps 0: a run needs at least one step"),
    "limit_train_batches 0": ([*FIT, "--trainer.limit_train_batches", "0"], "trains nothing"),
    "accelerator gpu without one": ([*FIT, "--trainer.accelerator", "gpu"], "this machine has 0 CUDA GPU(s)"),
    "seed -1": ([*FIT, "--seed_everything", "-1"], "--seed_everything -1: a seed is an integer in [0, 2**32 - 1]"),
    "unknown trainer option": ([*FIT, "--trainer.epochs", "1"], "epochs"),
    "trainer option abbreviated": ([*FIT, "--trainer.max_epoch", "1"], "ok"),  # argparse: a unique prefix
    "config missing": ([*FIT, "--config", "missing.yaml"], "--config missing.yaml: no such file"),
    "config a folder": ([*FIT, "--config", "good"], "--config good: no such file"),
    "config not YAML": ([*FIT, "--config", "broken.yaml"], "--config broken.yaml: YAML syntax error"),
    "ckpt_path missing": ([*FIT, "--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such checkpoint file"),
    "max_epochs -1 with max_steps": ([*FIT, "--trainer.max_epochs", "-1", "--trainer.max_steps", "1"], "ok"),
    # -- lssl probe --------------------------------------------------------------------------------
    "probe": (["probe", "CKPT", "--out", "probe.json"], "ok"),
    "probe missing checkpoint": (["probe", "missing.ckpt"], "checkpoint missing.ckpt does not exist"),
    "probe a folder": (["probe", "good"], "good is a folder, not a checkpoint"),
    "probe a text file": (["probe", "broken.yaml"], "broken.yaml is not a readable checkpoint"),
    "probe recipe unknown": (["probe", "CKPT", "--linear_recipe", "sgd"], "unknown linear probe recipe 'sgd'"),
    "probe on cuda without one": (["probe", "CKPT", "--device", "cuda"], "this machine has 0 CUDA GPU(s)"),
    "probe device unknown": (["probe", "CKPT", "--device", "tpu9"], "--device 'tpu9' is not a torch device"),
    "probe knn_k 0": (["probe", "CKPT", "--knn_k", "0"], "--knn_k 0 must be >= 1"),
    "probe temperature 0": (["probe", "CKPT", "--knn_temperature", "0"], "--knn_temperature 0.0 must be > 0"),
    "probe steps 0": (["probe", "CKPT", "--linear_steps", "0"], "--linear_steps 0 must be > 0"),
    "probe lr -1": (["probe", "CKPT", "--linear_lr", "-1"], "--linear_lr -1.0 must be > 0"),
    "probe epochs before the lr drops": (
        ["probe", "CKPT", "--linear_recipe", "sdclr", "--linear_epochs", "2"],
        "--linear_epochs 2: the sdclr recipe drops its lr at epochs 10, 20",
    ),
    "probe set unknown": (["probe", "CKPT", "--probe_sets", "[10shot]"], "has no probe set 10shot"),
    "probe finetune recipe": (
        ["probe", "CKPT", "--finetune", "true", "--finetune_recipe", "adam"],
        "unknown fine-tuning recipe 'adam'",
    ),
    "probe finetune epochs 0": (
        ["probe", "CKPT", "--finetune", "true", "--finetune_epochs", "0"],
        "fine-tuning epochs=0 must be >= 1",
    ),
    "probe transfer data bad": (
        ["probe", "CKPT", "--data", "DigitsLT", "--data.imbalance_ratio", "0"],
        "imbalance_ratio=0.0 is outside (0, 1]",
    ),
    "probe transfer data unknown": (["probe", "CKPT", "--data", "MNISTLT"], "unknown dataset 'MNISTLT'"),
    "probe out a folder": (["probe", "CKPT", "--out", "good"], "--out good is a folder"),
    "probe unknown option": (["probe", "CKPT", "--neighbours", "5"], "unrecognized arguments"),
    "probe ambiguous option": (["probe", "CKPT", "--knn", "5"], "ambiguous option: --knn could match"),
    # -- lssl dnc ------------------------------------------------------------------------------------
    "dnc clusters 0": ([*DNC, "--num_clusters", "0"], "num_clusters=0 must be >= 1"),
    "dnc more clusters than images": (
        [*DNC, "--num_clusters", "1000"],
        "num_clusters=1000 clusters for a pre-training",
    ),
    "dnc base_epochs 0": ([*DNC, "--base_epochs", "0"], "base_epochs=0 must be >= 1"),
    "dnc expert_epochs -1": ([*DNC, "--expert_epochs", "-1"], "expert_epochs=-1.0 must be > 0"),
    "dnc distill_epochs 0": ([*DNC, "--distill_epochs", "0"], "distill_epochs=0 must be >= 1"),
    "dnc until unknown": ([*DNC, "--until", "clustering"], "--until 'clustering' is not a DnC stage"),
    "dnc k-means backend unknown": ([*DNC, "--kmeans_backend", "sklearn"], "kmeans_backend='sklearn' is not one of"),
    "dnc k-means on a GPU here": ([*DNC, "--kmeans_backend", "faiss-gpu"], "is not available here"),
    "dnc k-means iterations 0": ([*DNC, "--kmeans_iterations", "0"], "kmeans_iterations=0 must be >= 1"),
    "dnc k-means starts 0": ([*DNC, "--kmeans_n_init", "0"], "kmeans_n_init=0 must be >= 1"),
    "dnc teacher without a projector": (
        [*DNC, "--model", "lightning_ssl.methods.simclr.SimCLR"],
        "has no projector_hidden",
    ),
    "dnc distill views 0": (
        [*DNC, "--distill.num_large_views", "0"],
        "student (distill options {'head_hidden_dim': 4096, 'num_large_views': 0}): num_large_views=0 must be >= 1",
    ),
    "dnc distill lr -1": (
        [*DNC, "--distill.lr", "-1"],
        "DnC student (distill options {'head_hidden_dim': 4096, "
        "'num_large_views': 2, 'lr': -1.0}): lr=-1.0 must be > 0",
    ),
    "dnc limit_train_batches 0": ([*DNC, "--trainer.limit_train_batches", "0"], "trains nothing"),
    "dnc teacher lr nan": ([*DNC, "--model.lr", ".nan"], "lr=nan must be > 0 and finite"),
    "dnc data batch 0": ([*DNC, "--data.batch_size", "0"], "batch_size=0 must be an integer >= 1"),
    "dnc seed -1": ([*DNC, "--seed", "-1"], "--seed -1 must be an integer in [0, 2**32 - 1]"),
    "dnc work_dir a file": ([*DNC, "--work_dir", "broken.yaml"], "--work_dir broken.yaml is a file"),
    "dnc without data": (["dnc", "--num_clusters", "2"], "data"),
    # -- lssl sweep / report / bench ---------------------------------------------------------------
    "sweep missing spec": (["sweep", "missing.yaml"], "missing.yaml"),
    "sweep unknown spec key": (["sweep", "SPEC:typo", "--dry-run"], "grdi"),
    "sweep unknown method": (["sweep", "SPEC:method", "--dry-run"], "SimCRL"),
    "sweep bad data value": (["sweep", "SPEC:ratio", "--dry-run"], "imbalance_ratio=0.0 is outside (0, 1]"),
    "sweep seed -1": (["sweep", "SPEC:seed", "--dry-run"], "a seed is an integer in [0, 2**32 - 1]"),
    "sweep bad model value": (["sweep", "SPEC:temperature", "--dry-run"], "temperature=0.0 must be > 0"),
    "sweep knn_k 0": (["sweep", "SPEC:knn", "--dry-run"], "knn_k=0 must be an integer >= 1"),
    "sweep dnc clusters 0": (["sweep", "SPEC:dnc", "--dry-run"], "num_clusters=0 must be >= 1"),
    "sweep select matches nothing": (["sweep", "SPEC", "--select", "method=SwAV"], "matches none of the 2 runs"),
    "sweep select without =": (["sweep", "SPEC", "--select", "SimCLR"], "--select takes axis=value"),
    "sweep max-runs 0": (["sweep", "SPEC", "--max-runs", "0"], "argument --max-runs: 0 is not >= 1"),
    "sweep gpus 0": (["sweep", "SPEC", "--gpus", "0"], "argument --gpus: 0 is not >= 1"),
    "sweep run-id unknown": (["sweep", "SPEC", "--run-id", "0123456789"], "are not in sweep 'fz'"),
    "sweep launcher unknown": (["sweep", "SPEC", "--launcher", "ray"], "invalid choice: 'ray'"),
    "sweep dry run": (["sweep", "SPEC", "--dry-run"], "ok"),
    "report missing": (["report", "nowhere"], "nowhere is neither a results folder nor a sweep spec"),
    "report empty folder": (["report", "good/a"], "no finished results to report"),
    "report option unknown": (["report", "SPEC", "--metrics", "x"], "unrecognized arguments: --metrics x"),
    "bench missing spec": (["bench", "--spec", "missing.yaml"], "--spec missing.yaml: no such sweep spec"),
}
PREPARED = {
    "SPEC": {},
    "SPEC:typo": {"grdi": {"seed": [0]}},
    "SPEC:method": {"grid": {"method": ["SimCRL"]}},
    "SPEC:ratio": {"base": {**SPEC["base"], "data": {"class_path": "DigitsLT", "init_args": {"imbalance_ratio": 0}}}},
    "SPEC:seed": {"grid": {"method": ["SimCLR"], "seed": [-1]}},
    "SPEC:temperature": {"grid": {"method": ["SimCLR"], "model.temperature": [0.0]}},
    "SPEC:knn": {"evaluation": {"knn_k": 0}},
    "SPEC:dnc": {"grid": {"method": ["DnC"]}, "dnc": {"num_clusters": 0}},
}


def write_bad_images(folder: Path) -> None:
    """Four files that are not images a loader can read, beside good ones: empty, a text file named
    .jpg, a PNG cut in half, a JPEG whose data is garbage."""
    good = sorted((folder / "a").glob("*.png"))[0].read_bytes()
    (folder / "a" / "empty.png").write_bytes(b"")
    (folder / "b" / "notes.jpg").write_text("not an image")
    (folder / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "c" / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(64))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory: a class-folder tree (3 classes x 4 images), the same with 4 bad files,
    a broken YAML file, the sweep specs, and a checkpoint of a one-step fit."""
    root = tmp_path_factory.mktemp("fuzz")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        write_class_folders(root / "good", {"a": 4, "b": 4, "c": 4}, size=(10, 10))
        write_class_folders(root / "bad", {"a": 4, "b": 4, "c": 4}, size=(10, 10))
        write_bad_images(root / "bad")
        (root / "good" / "a" / "a").mkdir()  # an empty folder for `report`
        Path("broken.yaml").write_text("model:\n  - [unclosed\n")
        for key, changes in PREPARED.items():
            spec(key.replace(":", "_"), **changes)
        assert main(FIT) == 0
        (root / "model.ckpt").write_bytes(next(root.glob("runs/*/checkpoints/last.ckpt")).read_bytes())
    finally:
        os.chdir(cwd)
    return root


def prepared(argv: list[str]) -> list[str]:
    """``argv`` with the placeholders of the world (the checkpoint, the specs) filled in."""
    return ["model.ckpt" if a == "CKPT" else f"{a.replace(':', '_')}.yaml" if a in PREPARED else a for a in argv]


@pytest.mark.parametrize("case", list(CASES))
def test_input(case: str, world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    argv, expected = CASES[case]
    monkeypatch.chdir(world)
    code = main(prepared(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    if expected == "ok":
        assert code == 0, err
        return
    command = argv[0] if argv and argv[0] in COMMANDS else ""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lssl {command}: " if command else "lssl: "), lines[0]
    assert expected in lines[0], lines[0]


def test_a_full_disk_at_checkpoint_save_is_one_line(
    world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def full(self: pl.Trainer, filepath: str, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    monkeypatch.chdir(world)
    monkeypatch.setattr(pl.Trainer, "save_checkpoint", full)
    assert main([*FIT, "--trainer.default_root_dir", "full_disk"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lssl fit: cannot write checkpoint ") and ".ckpt" in err
    assert "No space left on device" in err and "--trainer.default_root_dir" in err


def test_a_working_directory_without_write_permission_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir("/sys/kernel")  # not writable, even by root
    assert main(FIT) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lssl fit: "), err
    assert "run from a folder you can write to or pass --trainer.default_root_dir DIR" in err


def test_nonfinite_skip_says_so_and_records_the_count(
    world: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import torch

    monkeypatch.chdir(world)
    argv = [
        *FIT,
        "--model",
        "tests.fault_methods.NaNFromStep1",
        "--model.nonfinite",
        "skip",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.default_root_dir",
        "nan_run",
    ]
    with pytest.warns(UserWarning, match=r"NaNFromStep1: 3 of 4 training steps \(75 %\) had a non-finite loss"):
        assert main(argv) == 0
    ckpt = torch.load(next(Path("nan_run").rglob("last.ckpt")), weights_only=False)
    assert ckpt["skipped_steps"] == 3


def test_help_into_a_closed_pipe_has_no_traceback() -> None:
    """``lssl help SimCLR | head -1`` where ``head`` has left before the help is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_ssl.cli.main", "help", "SimCLR"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first line: every write hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and not err.strip(), err.decode()
