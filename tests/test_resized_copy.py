"""scripts/resized_copy.py: the training copies of issue 12 (same class folders and stems, so the same seeded split)."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcell.data.images import read_image
from bloodcell.data.preprocess import Preprocess

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
spec = importlib.util.spec_from_file_location("resized_copy", ROOT / "scripts" / "resized_copy.py")
resized_copy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resized_copy)


def _stems(root: Path) -> list[tuple[str, str]]:
    return sorted((p.parent.name, p.stem) for p in root.glob("*/*") if p.is_file() and not p.name.startswith("."))


def _copied_beside_sources(copy: Path, ext: str, n: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(source image as read_image decodes it, its copy's RGB pixels) for the first n sample files."""
    sources = sorted(p for p in SAMPLE.glob("*/*") if p.is_file())[:n]
    return [(read_image(src), np.asarray(Image.open(copy / src.parent.name / f"{src.stem}.{ext}").convert("RGB")))
            for src in sources]


def test_copy_keeps_folders_and_stems_and_resizes_as_asked(tmp_path):
    assert resized_copy.main([str(SAMPLE), str(tmp_path / "png"), "--size", "32", "--resample", "box"]) == 0
    assert _stems(tmp_path / "png") == _stems(SAMPLE)
    src = next(p for p in sorted(SAMPLE.glob("*/*")) if p.is_file())
    out = np.asarray(Image.open(tmp_path / "png" / src.parent.name / f"{src.stem}.png"))
    expected = np.asarray(Image.open(src).convert("RGB").resize((32, 32), Image.Resampling.BOX))
    np.testing.assert_array_equal(out, expected)  # PNG: lossless


def test_webp_copy_is_what_pil_writes_and_differs_from_lossless(tmp_path):
    resized_copy.main([str(SAMPLE), str(tmp_path / "webp"), "--size", "32", "--webp", "85"])
    src = next(p for p in sorted(SAMPLE.glob("*/*")) if p.is_file())
    webp = tmp_path / "webp" / src.parent.name / f"{src.stem}.webp"
    assert Image.open(webp).format == "WEBP"
    lossless = np.asarray(Image.open(src).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)).astype(int)
    assert 0 < np.abs(np.asarray(Image.open(webp).convert("RGB")).astype(int) - lossless).mean() < 10


def test_destination_inside_the_source_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        resized_copy.main([str(SAMPLE), str(SAMPLE / "copy")])
    assert not (SAMPLE / "copy").exists()


def test_preprocess_reencode_gives_the_box_webp_copys_pixels(tmp_path):
    """`data.preprocess.reencode=webp` (applied alike in training, evaluation and prediction) feeds exactly the pixels
    of the measured `--resample box --webp 85` training copy: the project resizes with BOX, then re-encodes."""
    resized_copy.main([str(SAMPLE), str(tmp_path / "box_webp"), "--size", "32", "--resample", "box", "--webp", "85"])
    prep = replace(Preprocess.resize_only(32), reencode="webp", reencode_quality=85)
    for source, copied in _copied_beside_sources(tmp_path / "box_webp", "webp"):
        np.testing.assert_array_equal(prep(source), copied)


def test_preprocess_downsample_bicubic_gives_the_bicubic_copys_pixels(tmp_path):
    """`data.preprocess.downsample=bicubic` feeds exactly the pixels of the measured lossless `--resample bicubic`
    copy (pipeline_bicubic), so a model trained with the option sees what that row's model saw."""
    resized_copy.main([str(SAMPLE), str(tmp_path / "bicubic"), "--size", "32", "--resample", "bicubic"])
    prep = Preprocess.resize_only(32)
    bicubic = replace(prep, downsample="bicubic")
    for source, copied in _copied_beside_sources(tmp_path / "bicubic", "png"):
        np.testing.assert_array_equal(bicubic(source), copied)
        assert not np.array_equal(prep(source), copied)  # the default (BOX) is not that copy
