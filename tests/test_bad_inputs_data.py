"""Bad data and sweep-launch inputs: each is converted correctly, skipped with a warning, or refused
with one line naming the input and the fix; nothing already computed is touched."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import yaml
from PIL import Image

from datamodules import fashion_mnist
from datamodules.cifar import CIFAR10LT
from datamodules.digits import DigitsLT
from datamodules.errors import DataInputError, DataNotFoundError
from datamodules.fashion_mnist import FashionMNISTLT
from datamodules.file_datasets import load_square
from datamodules.image_folder import ImageFolderLT
from tests.fixtures import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]


# -- image modes -----------------------------------------------------------------------------------
def grey(values: list[float]) -> np.ndarray:
    return np.asarray(values).reshape(1, -1)


# (mode, how to make the image, expected 8-bit RGB of each pixel), worked out by hand
MODES = {
    "I;16 (16-bit PNG)": (
        lambda: Image.fromarray(grey([0, 257 * 100, 65535]).astype(np.uint16)),
        [(0, 0, 0), (100, 100, 100), (255, 255, 255)],
    ),
    "I, 16-bit range": (
        lambda: Image.fromarray(grey([0, 257 * 7, 65535]).astype(np.int32)),
        [(0, 0, 0), (7, 7, 7), (255, 255, 255)],
    ),
    "I, 8-bit range": (
        lambda: Image.fromarray(grey([0, 100, 255]).astype(np.int32)),
        [(0, 0, 0), (100, 100, 100), (255, 255, 255)],
    ),
    "F, [0, 1]": (
        lambda: Image.fromarray(grey([0.0, 0.5, 1.0]).astype(np.float32)),
        [(0, 0, 0), (128, 128, 128), (255, 255, 255)],
    ),
    "RGBA over white": (
        lambda: Image.fromarray(
            np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [0, 0, 0, 51]]], dtype=np.uint8), "RGBA"
        ),
        [(200, 100, 50), (255, 255, 255), (204, 204, 204)],
    ),  # 255 * (1 - 51/255) = 204
    "LA over white": (
        lambda: Image.fromarray(np.array([[[10, 255], [10, 0], [10, 255]]], dtype=np.uint8), "LA"),
        [(10, 10, 10), (255, 255, 255), (10, 10, 10)],
    ),
    "P with a transparent colour": (lambda: _palette(), [(255, 0, 0), (255, 255, 255), (255, 0, 0)]),
    "CMYK": (
        lambda: Image.fromarray(np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0]]], dtype=np.uint8), "CMYK"),
        [(255, 255, 255), (0, 0, 0), (0, 255, 255)],
    ),
}


def _palette() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0])
    img.putdata([0, 1, 0])
    img.info["transparency"] = 1  # colour 1 is transparent
    return img


@pytest.mark.parametrize("case", list(MODES))
def test_image_modes_become_the_right_8bit_rgb(tmp_path: Path, case: str) -> None:
    make, expected = MODES[case]
    img = make()
    path = tmp_path / ("x.png" if img.mode in ("I;16", "RGBA", "LA", "P") else "x.tiff")
    img.save(path)
    assert Image.open(path).mode == img.mode  # the file really holds that mode
    assert _pixels(path) == expected


def _pixels(path: Path) -> list[tuple[int, int, int]]:
    from datamodules.file_datasets import to_rgb

    with Image.open(path) as img:
        rgb = np.asarray(to_rgb(img))
    return [tuple(int(v) for v in px) for px in rgb[0]]


def test_16bit_png_through_the_loader_is_not_white(tmp_path: Path) -> None:
    path = tmp_path / "ramp.png"
    Image.fromarray(np.tile(np.linspace(0, 65535, 16), (16, 1)).astype(np.uint16)).save(path)
    image = load_square(path, 16)
    assert image.shape == (3, 16, 16)
    assert (image == 255).float().mean() < 0.1  # PIL's own convert("RGB") makes 15 / 16 of it white
    assert image[0, 0].tolist() == [round(v * 255 / 65535) for v in np.linspace(0, 65535, 16)]


@pytest.mark.parametrize("mode,values", [("I", [0, 70000]), ("F", [-1.0, 300.0])])
def test_out_of_range_modes_are_refused_naming_the_image(tmp_path: Path, mode: str, values: list) -> None:
    path = tmp_path / "wide.tiff"
    Image.fromarray(grey(values).astype(np.int32 if mode == "I" else np.float32)).save(path)
    with pytest.raises(DataInputError) as err:
        load_square(path, 2, origin="list.txt:3")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "list.txt:3" in msg and f"mode {mode}" in msg
    assert "convert it to an 8-bit image" in msg


# -- folders ---------------------------------------------------------------------------------------
def write(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, 0, 0)).save(path)


@pytest.mark.parametrize("case", ["hidden folder", "empty class folder", "hidden files in a class"])
def test_hidden_and_empty_folders_are_skipped_with_a_warning(tmp_path: Path, case: str) -> None:
    for c in ("cat", "dog"):
        for i in range(3):
            write(tmp_path / c / f"{i}.png", 40 * i)
    expected_warning = {
        "hidden folder": r"skipping hidden folder\(s\) \['.ipynb_checkpoints'\]",
        "empty class folder": r"skipping empty class folder\(s\) \['emu'\] .*: they are not classes",
        "hidden files in a class": r"and 2 hidden image file\(s\) inside the class folders",
    }[case]
    if case == "hidden folder":
        write(tmp_path / ".ipynb_checkpoints" / "0-checkpoint.png")
    elif case == "empty class folder":
        (tmp_path / "emu").mkdir()
        (tmp_path / "emu" / "notes.txt").write_text("no image here")
    else:
        write(tmp_path / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
        (tmp_path / "dog" / "._0.png").write_bytes(b"AppleDouble, not an image")
    dm = ImageFolderLT(root=str(tmp_path), profile="none", image_size=4)
    with pytest.warns(UserWarning, match=expected_warning):
        dm.setup()
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2
    assert dm.class_counts.tolist() == [3, 3]
    assert all(not any(part.startswith(".") for part in Path(p).parts) for p in dm.splits.pretrain.paths)


# -- roots -----------------------------------------------------------------------------------------
@pytest.fixture
def system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid Fashion-MNIST "system" copy: a wrong root must not silently train on it."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 2).astype(np.uint8)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    folder = tmp_path / "system"
    write_fashion_mnist(folder, images, labels, images, labels)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(folder),))
    return folder


@pytest.mark.parametrize("dataset", ["FashionMNISTLT", "CIFAR10LT"])
def test_a_wrong_root_is_an_error_never_another_copy(
    tmp_path: Path, system_copy: Path, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "fashon-mnist"  # a typo
    cls = {"FashionMNISTLT": FashionMNISTLT, "CIFAR10LT": CIFAR10LT}[dataset]
    with pytest.raises(DataNotFoundError) as err:
        cls(root=str(wrong), profile="balanced").setup()
    msg = str(err.value)
    assert "\n" not in msg and str(wrong) in msg and "download=True" in msg
    assert f"root={str(wrong)!r}" in msg and "Fix root" in msg
    assert f"{system_copy}," not in msg and not msg.count(f"{system_copy})")  # not searched either
    if dataset == "FashionMNISTLT":  # only the default root also searches the system folder
        monkeypatch.chdir(tmp_path)
        assert FashionMNISTLT(profile="balanced").class_counts.tolist() == [2] * 10


# -- balanced sets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"imbalance_ratio": 1.0}, {"profile": "balanced"}, {"balanced_twin": True}])
def test_a_balanced_set_reports_no_groups(options: dict) -> None:
    from lightning_ssl.eval.metrics import group_report
    from lightning_ssl.sweep.record import RunRecord
    from lightning_ssl.sweep.report import main_table

    dm = DigitsLT(**options)
    counts = dm.class_counts
    assert counts.min() == counts.max()  # equal classes: no many / medium / few among them
    assert dm.group_rule == "none"
    assert {k: v.tolist() for k, v in dm.class_groups.items()} == {"many": [], "medium": [], "few": []}
    assert DigitsLT(imbalance_ratio=0.1).group_rule == "thirds"  # the long-tailed set keeps its rule
    target = np.arange(10).repeat(3)
    metrics = group_report(target, target, 10, dm.class_groups, dm.group_rule, "knn")
    assert metrics["knn/acc_top1"] == 1.0
    assert math.isnan(metrics["knn/none/acc_many"]) and math.isnan(metrics["knn/none/std"])
    record = RunRecord.from_json(
        {"run_id": "r", "axes": {"method": "SimCLR"}, "seed": 0, "metrics": metrics, "per_class": {"knn": [1.0] * 10}}
    )
    table, _ = main_table([record])  # a report over such a run does not crash; its groups show as missing
    row = table.splitlines()[-1].split(" | ")
    assert row[2:7] == ["100.00", "–", "–", "–", "–"]


# -- missing options -------------------------------------------------------------------------------
def test_fashion_mnist_without_image_size_logs_its_hparams(tmp_path: Path, system_copy: Path) -> None:
    from lightning_ssl.methods import SimCLR

    dm = FashionMNISTLT(root=str(system_copy), profile="balanced", batch_size=10)
    assert dm.hparams_initial["image_size"] == 28  # resolved, not None
    model = SimCLR(backbone="resnet_tiny", image_size=28, proj_hidden_dim=8, proj_output_dim=4)
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(tmp_path),
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, dm)  # Lightning merges both hparams for the logger: None vs 28 was an error
    assert yaml.safe_load((Path(trainer.log_dir) / "hparams.yaml").read_text())["image_size"] == 28


def test_image_folder_without_test_root_trains_and_says_how_to_add_one(tmp_path: Path) -> None:
    for c in ("cat", "dog"):
        for i in range(4):
            write(tmp_path / "train" / c / f"{i}.png", 30 * i)
    dm = ImageFolderLT(root=str(tmp_path / "train"), profile="none", image_size=4, batch_size=4)
    dm.setup()
    with pytest.warns(UserWarning, match=r"no test set \(pass test_root=DIR holding the same class folders\)"):
        assert dm.val_dataloader() == []
    with pytest.raises(DataInputError, match=r"ImageFolderLT has no test set to evaluate on \(pass test_root=DIR"):
        dm.test_dataloader()


# -- sweep launch ----------------------------------------------------------------------------------
SPEC = {
    "name": "bad",
    "base": {
        "model": {"class_path": "SimCLR", "init_args": {"backbone": "resnet_tiny"}},
        "data": {"class_path": "DigitsLT"},
    },
    "grid": {"seed": [0]},
}
YAML_CASES = {
    "syntax error": (
        "name: bad\ngrid:\n  seed: [0, 1\n  method: [SimCLR]\n",
        r"bad\.yaml:4:9: YAML syntax error: expected ',' or '\]', but got ':' "
        r"\(while parsing a flow sequence opened at line 3, column 9\)",
    ),
    "duplicated key": (
        "name: bad\ngrid:\n  seed: [0]\n  seed: [1]\n",
        r"bad\.yaml:4:3: duplicate key 'seed' \(first at line 3\); keep one of them",
    ),
}
LAUNCH_CASES = {
    "slurm outside SLURM": (
        ["--launcher", "slurm"],
        r"--launcher slurm needs SLURM's `sbatch` on PATH, which is "
        r"not found .*use --launcher local",
    ),
    "gpus without GPUs": (
        ["--gpus", "4"],
        r"--gpus 4 asks for 4 GPU workers but this machine has 0 CUDA GPU\(s\); "
        r"pass --gpus 1 \(one process, on the CPU\)",
    ),
}


def sweep(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "PATH": os.path.dirname(sys.executable)}
    return subprocess.run(
        [sys.executable, "-m", "lightning_ssl.cli.main", "sweep", *args, "--results", "res"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("case", [*YAML_CASES, *LAUNCH_CASES])
def test_sweep_input_errors_are_one_line_and_keep_results(tmp_path: Path, case: str) -> None:
    import re

    path = tmp_path / "bad.yaml"
    if case in YAML_CASES:
        text, expected = YAML_CASES[case]
        path.write_text(text)
        args = [str(path)]
    else:
        path.write_text(yaml.safe_dump(SPEC))
        extra, expected = LAUNCH_CASES[case]
        args = [str(path), *extra]
    done = tmp_path / "res" / "bad" / "0123456789.json"  # an earlier finished result
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"run_id": "0123456789", "metrics": {}}))
    before = {p.name: p.read_bytes() for p in done.parent.iterdir()}
    proc = sweep(tmp_path, args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lssl sweep: ") and re.search(expected, lines[0]), lines[0]
    assert {p.name: p.read_bytes() for p in done.parent.iterdir()} == before  # nothing submitted or written


def test_a_spec_typo_is_reported_before_torch_is_loaded(tmp_path: Path) -> None:
    """The YAML check runs first: a typo costs a user a second, not the 5-9 s of loading torch and Lightning."""
    path = tmp_path / "bad.yaml"
    path.write_text(YAML_CASES["syntax error"][0])
    call = f"main(['sweep', {str(path)!r}])"
    code = f"import sys; from lightning_ssl.cli.main import main; print({call}, 'torch' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.split() == ["2", "False"], proc.stderr[-2000:]
    assert proc.stderr.startswith("lssl sweep: ") and "YAML syntax error" in proc.stderr


def test_no_gpu_check_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from lightning_ssl.sweep import launchers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="has 2 CUDA GPU\\(s\\); pass --gpus 2$"):
        launchers.run_local_gpus("spec.yaml", "res", "work", 4)
