"""Seeded random damage to real sample images: the folder loader and the prediction command never
crash, and every file is accounted for (read, or listed with a reason)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcell.data import FolderSource
from bloodcell.data.images import ImageReadError, read_image
from bloodcell.evaluation.predict import predict_folder
from tests.conftest import SAMPLE
from tests.test_predict import checkpoints  # noqa: F401  (module-scoped fixture: two real small checkpoints)

SEED = 20261125
DAMAGES = ("truncate", "bit_flips", "random_span", "garbage_prefix", "random_bytes", "header_hit")


def damage(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One seeded corruption of an encoded image file."""
    buf = bytearray(data)
    n = len(buf)
    if kind == "truncate":
        return bytes(buf[: int(rng.integers(0, n))])
    if kind == "bit_flips":
        for pos in rng.integers(0, n, int(rng.integers(1, 20))):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf)
    if kind == "random_span":
        start = int(rng.integers(0, n - 1))
        length = int(rng.integers(1, max(2, n // 4)))
        buf[start : start + length] = rng.integers(0, 256, len(buf[start : start + length]), dtype=np.uint8).tobytes()
        return bytes(buf)
    if kind == "garbage_prefix":
        return rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes() + bytes(buf)
    if kind == "random_bytes":
        return rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes()
    if kind == "header_hit":  # flips inside the first 64 bytes: markers, sizes, chunk types
        for pos in rng.integers(0, min(64, n), int(rng.integers(1, 4))):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(buf)
    raise ValueError(kind)


def encoded_variants(path: Path) -> list[tuple[str, bytes]]:
    """The same real image as JPEG, PNG, BMP and 16-bit TIFF bytes."""
    img = Image.open(path)
    out = [(".jpg", path.read_bytes())]
    for suffix, fmt, im in (
        (".png", "PNG", img),
        (".bmp", "BMP", img),
        (".tif", "TIFF", Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)),
    ):
        b = io.BytesIO()
        im.save(b, format=fmt)
        out.append((suffix, b.getvalue()))
    return out


def damaged_tree(root: Path, per_class: int = 8, seed: int = SEED) -> list[Path]:
    """Class folders, each with one intact image and `per_class` seeded damaged ones."""
    rng = np.random.default_rng(seed)
    files = []
    for d in sorted(p for p in SAMPLE.iterdir() if p.is_dir()):
        (root / d.name).mkdir(parents=True)
        sources = sorted(d.glob("*.jpg"))
        intact = root / d.name / "intact.jpg"
        intact.write_bytes(sources[0].read_bytes())
        files.append(intact)
        for i in range(per_class):
            suffix, data = encoded_variants(sources[1 + i % (len(sources) - 1)])[i % 4]
            kind = DAMAGES[int(rng.integers(0, len(DAMAGES)))]
            path = root / d.name / f"{i:02d}_{kind}{suffix}"
            path.write_bytes(damage(data, kind, rng))
            files.append(path)
    return files


def test_read_image_only_raises_image_read_error(tmp_path):
    files = damaged_tree(tmp_path / "t", per_class=12)
    reads = classify_reads(files)
    assert len(reads["ok"]) + len(reads["error"]) == len(files) == 104
    assert len(reads["error"]) >= 30  # most damage is detected; JPEG tolerates some bit flips in pixel data


def test_folder_loader_accounts_for_every_damaged_file(tmp_path):
    root = tmp_path / "t"
    files = damaged_tree(root)
    table = FolderSource(root, on_bad_file="warn", num_workers=2).load(32)
    read = set(table.ids)
    bad = {p for p, _ in table.bad_files}
    assert read.isdisjoint(bad) and read | bad == {str(f) for f in files}
    assert all(why for _, why in table.bad_files)
    assert table.images.shape == (len(read), 32, 32, 3)


def test_predict_accounts_for_every_damaged_file(tmp_path, checkpoints):  # noqa: F811
    root = tmp_path / "t"
    files = damaged_tree(root)
    (root / "ig" / "notes.txt").write_text("not an image")
    files.append(root / "ig" / "notes.txt")
    summary = predict_folder(checkpoints, root, tmp_path / "p.csv", device="cpu", batch_size=16)
    with open(summary.predictions_csv, newline="") as f:
        predicted = [r["path"] for r in csv.DictReader(f)]
    with open(summary.errors_csv, newline="") as f:
        errors = [(r["path"], r["error"]) for r in csv.DictReader(f)]
    assert summary.files == len(files) == summary.predicted + summary.errors
    assert sorted(predicted + [p for p, _ in errors]) == sorted(str(f) for f in files)
    assert all(why for _, why in errors) and summary.errors >= 20
    assert {str(root / d / "intact.jpg") for d in ("basophil", "platelet")} <= set(predicted)


def classify_reads(files: list[Path]) -> dict[str, list[Path]]:
    """Read every file: 'ok' (a valid H×W×3 uint8 picture) or 'error' (ImageReadError with a reason); anything else fails."""
    out: dict[str, list[Path]] = {"ok": [], "error": []}
    for f in files:
        try:
            arr = read_image(f)
        except ImageReadError as exc:
            assert str(exc).strip(), f"{f}: empty reason"
            out["error"].append(f)
        else:
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 1, (f, arr.shape)
            out["ok"].append(f)
    return out


@pytest.mark.slow
def test_fuzz_many_seeds(tmp_path):
    """Longer soak: 10 seeds × 104 files. Every file is either decoded to a valid picture or refused with a reason
    (never another exception); intact files always decode; a truncated file, a file behind a garbage prefix and
    random bytes are always refused (never a half-grey or garbage picture); and most damage is detected on every seed."""
    always_refused = ("truncate", "garbage_prefix", "random_bytes")
    for k in range(10):
        seed = SEED + k
        files = damaged_tree(tmp_path / str(k), per_class=12, seed=seed)
        reads = classify_reads(files)
        assert len(reads["ok"]) + len(reads["error"]) == len(files) == 104
        intact = {f for f in files if f.name == "intact.jpg"}
        assert intact <= set(reads["ok"]), f"seed {seed}: an intact file was refused"
        slipped = [f.name for f in reads["ok"] if f not in intact and f.stem.split("_", 1)[1] in always_refused]
        assert not slipped, f"seed {seed}: decoded although damaged beyond repair: {slipped}"
        assert len(reads["error"]) >= 50, f"seed {seed}: only {len(reads['error'])} of 96 damaged files refused"
