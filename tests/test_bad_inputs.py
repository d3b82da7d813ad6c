"""Every bad input gives one specific, actionable message (in-process and through the real CLIs).

Complements tests/test_data.py (wrong npz keys, float images, 5 channels, label count, label 9,
missing/empty/unknown class folders, data.root missing via train.py), without repeating it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodcell.checkpoint import read_checkpoint
from bloodcell.data import FolderSource, NpzSource
from bloodcell.data.images import ImageReadError, read_image
from bloodcell.errors import BloodcellError, CheckpointError, ConfigError, DataError
from bloodcell.models import check_backbone_name
from bloodcell.optim import check_optimizer_name
from bloodcell.training import train
from tests.conftest import FAST, ROOT, SAMPLE

JPEG = sorted(SAMPLE.rglob("*.jpg"))[0]
TINY = ["data=sample", "model=small_cnn", "test=false", "evaluate=false", "data.image_size=32", "~logger.tensorboard", *FAST]


def damaged_files(folder: Path) -> dict[str, str]:
    """name → expected reason for the classic damaged files a scanner share produces."""
    src = JPEG.read_bytes()
    sos = src.find(b"\xff\xda")
    png = folder / "tmp.png"
    from PIL import Image

    Image.open(JPEG).save(png)
    cases = {
        "zero.jpg": (b"", r"^empty file \(0 bytes\)$"),
        "half.jpg": (src[: len(src) // 2], r"^truncated or incomplete file, re-copy it \(OSError: image file is truncated"),
        "header_only.jpg": (src[:sos], r"^corrupt or unsupported image data \(OSError: cannot load this image\)"),
        "garbage_header.jpg": (src[:2] + bytes(100) + src[102:], r"^not a readable image: content matches no image format"),
        "half.png": (png.read_bytes()[: png.stat().st_size // 2], r"^truncated or incomplete file"),
        "text.jpg": (b"hello, I am a text file", r"^not a readable image"),
    }
    png.unlink()
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    return {name: why for name, (_, why) in cases.items()}


def test_damaged_image_files_each_get_a_reason(tmp_path):
    for name, expected in damaged_files(tmp_path).items():
        with pytest.raises(ImageReadError, match=expected):
            read_image(tmp_path / name)


def test_folder_fail_policy_lists_every_bad_file_and_what_to_do(tmp_path):
    root = tmp_path / "imgs"
    for d in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        (root / d.name).mkdir(parents=True)
        shutil.copy(next(d.glob("*.jpg")), root / d.name)
    expected = damaged_files(root / "basophil")
    (root / "lymphocyte" / "Thumbs.db").write_bytes(b"\x00\x01")
    with pytest.raises(DataError) as info:
        FolderSource(root, on_bad_file="fail").load(32)
    text = str(info.value)
    assert text.startswith("7 unreadable file(s) under") and "data.on_bad_file=warn to skip them" in text
    for name in expected:
        assert f"{name}: " in text
    assert "Thumbs.db: not an image file (suffix '.db')" in text
    table = FolderSource(root, on_bad_file="warn").load(32)
    assert len(table) == 8 and len(table.bad_files) == 7


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: np.savez(p, images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, -1])),
            r"out of range \[0, 7\] \(e\.g\. -1 at index 1\)",
        ),
        (
            lambda p: np.savez(p, images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0.0, 1.0])),
            "'labels' has dtype float64; expected integer",
        ),
        (
            lambda p: np.savez(p, images=np.zeros((2, 16), np.uint8), labels=np.array([0, 1])),
            r"'images' has shape \(2, 16\); expected N×H×W×3",
        ),
        (lambda p: np.savez(p, images=np.zeros((0, 4, 4, 3), np.uint8), labels=np.zeros(0, int)), "N ≥ 1"),
        (lambda p: np.savez(p, images=np.array([object()] * 2), labels=np.array([0, 1])), "cannot be read without pickle"),
        (lambda p: Path(p).write_text("not a zip"), r"is not an \.npz archive \(numpy\.savez output\)"),
        (lambda p: None, "does not exist or is not a file"),
    ],
    ids=["negative_label", "float_labels", "flat_images", "zero_images", "pickled_objects", "not_npz", "missing"],
)
def test_npz_more_bad_layouts(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(DataError, match=message):
        NpzSource(path).load(4, allow_missing_classes=True)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ConfigError, match=r"model.backbone='resnet5O' is not a timm model. Did you mean: resnet50"):
        check_backbone_name("resnet5O")
    with pytest.raises(ConfigError, match=r"optim.optimizer.opt='adamz' is not a timm optimizer. Did you mean: adam,"):
        check_optimizer_name("adamz")


def test_unknown_optimizer_through_training(compose_cfg):
    with pytest.raises(ConfigError, match="'adamz' is not a timm optimizer"):
        train(compose_cfg([*TINY, "trainer.max_epochs=1", "optim.optimizer.opt=adamz"]))


def test_resume_errors(compose_cfg, tmp_path):
    out = Path(compose_cfg([]).paths.output_dir)
    with pytest.raises(BloodcellError, match=r"ckpt_path=last: .*checkpoints/last.ckpt does not exist; give hydra.run.dir="):
        train(compose_cfg([*TINY, "ckpt_path=last"]))
    with pytest.raises(BloodcellError, match=r"ckpt_path=.*nope.ckpt: no such checkpoint file; give a .ckpt path"):
        train(compose_cfg([*TINY, f"ckpt_path={tmp_path / 'nope.ckpt'}"]))
    train(compose_cfg([*TINY, "trainer.max_epochs=1"]))
    last = out / "checkpoints" / "last.ckpt"
    # same run dir, other image size / other model: named, not a state_dict dump
    with pytest.raises(CheckpointError, match=r"different setup \(data.image_size: checkpoint 32 vs config 48\)"):
        train(compose_cfg([*TINY, "data.image_size=48", "ckpt_path=last"]))
    with pytest.raises(CheckpointError, match=r"different setup \(model.head.dropout: checkpoint 0.3 vs config 0.5\)"):
        train(compose_cfg([*TINY, "model.head.dropout=0.5", "ckpt_path=last"]))
    # a checkpoint carrying pickled Python objects is refused before Lightning loads it
    ckpt = torch.load(last, weights_only=True)
    ckpt["payload"] = Exploit()
    torch.save(ckpt, last)
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        train(compose_cfg([*TINY, "ckpt_path=last"]))
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        read_checkpoint(last)


class Exploit:
    """Would run code on unpickling with weights_only=False."""

    def __reduce__(self):
        return (print, ("pwned",))


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_unknown_group_options_list_the_choices(tmp_path):
    """Hydra rejects a config-group typo before our code runs: no traceback, the options are listed."""
    for arg, options in (("model=resnet5O", "resnet50"), ("optim=adamz", "adamw")):
        res = run_cli("train.py", arg, f"hydra.run.dir={tmp_path}")
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert f"Could not find '{arg.replace('=', '/')}'" in res.stderr and options in res.stderr


def test_cli_bad_image_size(tmp_path):
    res = run_cli("train.py", "data=sample", "data.image_size=0", f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "error: data.image_size=0: must be an integer ≥ 8" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ["data=sample", "model=small_cnn", "model.backbone=resnet5O"], "error: model.backbone='resnet5O'"),
        ("train.py", ["data=sample", "ckpt_path=last"], "error: ckpt_path=last: "),
        ("evaluate.py", ["ckpt=nope.ckpt", "predict_dir=data/sample"], "error: ckpt=nope.ckpt: no such checkpoint file"),
        ("evaluate.py", ["ckpt=nope.ckpt", "predict_dir=/no/such/dir"], "error: predict_dir=/no/such/dir does not exist"),
    ],
)
def test_cli_more_user_errors(tmp_path, script, args, message):
    res = run_cli(script, *args, f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert message in res.stderr
