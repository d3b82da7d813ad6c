"""Data path: sources (folder, both npz layouts), dedup, stratified split, cache, balancing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bloodcell.data import CLASS_NAMES, BloodCellDataModule, BloodMNISTSource, FolderSource, NpzSource
from bloodcell.data.clean import deduplicate
from bloodcell.data.datamodule import class_weights_from_counts, data_defaults, oversample_indices
from bloodcell.data.images import read_image, resize_image
from bloodcell.data.split import stratified_split
from bloodcell.data.table import ImageTable
from bloodcell.errors import DataError
from tests.conftest import SAMPLE


def small_folder(tmp_path: Path, per_class: int = 4) -> Path:
    """Copy `per_class` real sample images per class into tmp (class folders keep the sample's names)."""
    root = tmp_path / "imgs"
    for d in sorted(SAMPLE.iterdir()):
        if d.is_dir():
            (root / d.name).mkdir(parents=True)
            for f in sorted(d.glob("*.jpg"))[:per_class]:
                shutil.copy(f, root / d.name / f.name)
    return root


def random_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_folder_source_reads_all_classes_and_resizes(tmp_path):
    table = FolderSource(small_folder(tmp_path)).load(64)
    assert table.images.shape == (32, 64, 64, 3) and table.images.dtype == np.uint8
    assert np.bincount(table.labels, minlength=8).tolist() == [4] * 8
    assert all(Path(i).is_file() for i in table.ids)


def test_folder_mixed_formats_and_modes(tmp_path):
    root = small_folder(tmp_path, per_class=2)
    src = next((root / "basophil").glob("*.jpg"))
    img = Image.open(src)
    img.convert("L").resize((50, 70)).save(root / "basophil" / "gray.png")
    img.convert("RGBA").save(root / "basophil" / "rgba.png")
    img.save(root / "basophil" / "x.bmp")
    Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(root / "basophil" / "deep.tif")
    table = FolderSource(root).load(32)
    assert table.images.shape[1:] == (32, 32, 3)
    assert np.bincount(table.labels)[0] == 6


def test_bad_files_warn_or_fail(tmp_path, caplog):
    root = small_folder(tmp_path, per_class=2)
    (root / "monocyte" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "monocyte" / "empty.png").write_bytes(b"")
    (root / "monocyte" / "notes.txt").write_text("hello")
    table = FolderSource(root, on_bad_file="warn").load(32)
    assert len(table) == 16
    bad = {Path(p).name for p, _ in table.bad_files}
    assert bad == {"broken.jpg", "empty.png", "notes.txt"}
    assert "broken.jpg" in caplog.text
    with pytest.raises(DataError, match="broken.jpg"):
        FolderSource(root, on_bad_file="fail").load(32)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        FolderSource(tmp_path / "nope").load(32)
    root = small_folder(tmp_path, per_class=1)
    shutil.rmtree(root / "platelet")
    with pytest.raises(DataError, match="missing class.*platelet"):
        FolderSource(root).load(32)
    assert len(FolderSource(root).load(32, allow_missing_classes=True)) == 7
    (root / "platelet").mkdir()
    with pytest.raises(DataError, match="contain no files"):
        FolderSource(root).load(32)
    (root / "platelet" / "a.jpg").write_bytes((root / "basophil").glob("*.jpg").__next__().read_bytes())
    (root / "macrophage").mkdir()
    with pytest.raises(DataError, match="unknown class name.*macrophage"):
        FolderSource(root).load(32)


def test_npz_an2dl_layout(tmp_path):
    images, labels = random_images(40), np.arange(40) % 8
    path = tmp_path / "an2dl.npz"
    np.savez(path, images=images, labels=labels.reshape(-1, 1))
    table = NpzSource(path).load(28)
    assert table.splits is None
    np.testing.assert_array_equal(table.images, images)
    np.testing.assert_array_equal(table.labels, labels)


def test_npz_medmnist_layout_keeps_its_split(tmp_path):
    parts = {s: random_images(16, seed=i) for i, s in enumerate(("train", "val", "test"))}
    path = tmp_path / "bloodmnist.npz"
    np.savez(path, **{f"{s}_images": x for s, x in parts.items()}, **{f"{s}_labels": (np.arange(16) % 8)[:, None] for s in parts})
    table = NpzSource(path).load(14)
    assert table.images.shape == (48, 14, 14, 3)
    assert list(np.unique(table.splits, return_counts=True)[1]) == [16, 16, 16]


def test_npz_string_labels_and_class_names(tmp_path):
    path = tmp_path / "named.npz"
    np.savez(path, images=random_images(16), labels=np.array(["platelet", "ig"] * 8))
    assert set(NpzSource(path).load(28, allow_missing_classes=True).labels.tolist()) == {7, 3}
    path2 = tmp_path / "custom_order.npz"
    np.savez(path2, images=random_images(16), labels=np.arange(16) % 2, class_names=np.array(["platelet", "basophil"]))
    assert NpzSource(path2).load(28, allow_missing_classes=True).labels[:2].tolist() == [7, 0]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 4, 4, 3), np.uint8)}, "expected AN2DL layout"),
        ({"images": np.zeros((2, 4, 4, 3), np.float32), "labels": np.zeros(2, int)}, "dtype float32"),
        ({"images": np.zeros((2, 4, 4, 5), np.uint8), "labels": np.zeros(2, int)}, "shape"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.zeros(3, int)}, "expected 2 labels"),
        ({"images": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0, 9])}, "out of range"),
    ],
)
def test_npz_bad_layouts(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        NpzSource(path).load(4, allow_missing_classes=True)


def test_bloodmnist_offline_message(tmp_path):
    src = BloodMNISTSource(size=28, root=str(tmp_path), download=False)
    with pytest.raises(DataError, match=r"bloodmnist\.npz.*zenodo"):
        src.fingerprint()


def test_bloodmnist_uses_local_file(tmp_path):
    parts = {s: random_images(8, seed=i) for i, s in enumerate(("train", "val", "test"))}
    np.savez(
        tmp_path / "bloodmnist_64.npz",
        **{f"{s}_images": x for s, x in parts.items()},
        **{f"{s}_labels": np.arange(8)[:, None] for s in parts},
    )
    table = BloodMNISTSource(size=64, root=str(tmp_path), download=False).load(32)
    assert len(table) == 24


def test_dedup_in_class_and_cross_class():
    imgs = random_images(6, size=4)
    imgs[1] = imgs[0]  # in-class duplicate: keep one
    imgs[3] = imgs[2]  # same picture under two classes: drop both
    labels = np.array([0, 0, 1, 2, 3, 4])
    from bloodcell.data.images import pixel_hash

    table = ImageTable(imgs, labels, [f"i{k}" for k in range(6)], [pixel_hash(x) for x in imgs])
    clean, report = deduplicate(table)
    assert clean.ids == ["i0", "i4", "i5"]
    assert report["in_class_duplicates_removed"] == 1 and report["cross_class_images_dropped"] == 2


def test_stratified_split_proportions_and_seed():
    labels = np.repeat(np.arange(8), [100, 250, 120, 230, 97, 113, 266, 188])
    a = stratified_split(labels, 0.1, 0.2, seed=1)
    for c in range(8):
        n = (labels == c).sum()
        assert abs((a[labels == c] == "test").sum() - 0.2 * n) <= 1
        assert abs((a[labels == c] == "val").sum() - 0.1 * n) <= 1
    np.testing.assert_array_equal(a, stratified_split(labels, 0.1, 0.2, seed=1))
    assert not np.array_equal(a, stratified_split(labels, 0.1, 0.2, seed=2))


def test_resize_modes():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :20] = 255
    assert resize_image(img, 20, "center_crop")[:, :2].max() == 0  # white margin cropped away
    assert resize_image(img, 20, "squash")[:, :2].min() == 255
    assert resize_image(img, 20, "pad").shape == (20, 20, 3)


def test_datamodule_cache_balance_and_loaders(tmp_path):
    def dm_for(balance):
        settings = {k: v for k, v in data_defaults().items() if k != "_target_"}  # conf/data/_common.yaml
        settings.update(
            image_size=32, cache_dir=str(tmp_path / "c"), balance=balance, num_workers=0, batch_size=8, val_fraction=0.2, test_fraction=0.2
        )
        return BloodCellDataModule(FolderSource(small_folder(tmp_path / balance, per_class=6)), **settings)

    dm = dm_for("none")
    dm.setup()
    assert (dm.cache_folder / "train_images.npy").is_file()
    assert dm.class_counts("train").sum() + dm.class_counts("val").sum() + dm.class_counts("test").sum() == 48
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype.is_floating_point is False and x.shape[1:] == (3, 32, 32)
    assert "immature_granulocyte" in dm.counts_table()
    assert dm.class_weights is None
    cw = dm_for("class_weights")
    cw.setup()
    assert cw.class_weights.shape == (8,)


def test_oversample_and_weights():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    idx = oversample_indices(labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    w = class_weights_from_counts(np.array([10, 5, 0]))
    assert w.tolist() == pytest.approx([0.75, 1.5, 0.0])


def test_read_image_reports_reason(tmp_path):
    p = tmp_path / "t.jpg"
    data = next((SAMPLE / "basophil").glob("*.jpg")).read_bytes()
    p.write_bytes(data[: len(data) // 2])
    from bloodcell.data.images import ImageReadError

    with pytest.raises(ImageReadError):
        read_image(p)


def test_pbc128_folder_loads(pbc128, tmp_path):
    """The shared real data set maps onto the 8 canonical classes (structure only; fast)."""
    files = FolderSource(pbc128).list_files()
    assert len(files) == 13659
    assert {c for _, c in files} == {"basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"}
    assert len(CLASS_NAMES) == 8


def test_pbc128_through_the_real_config(pbc128, compose_cfg):
    """data=pbc128 end to end through the data path at 32 px: all 13,659 images decoded, split, cached."""
    from bloodcell.training import build_datamodule

    dm = build_datamodule(compose_cfg(["data=pbc128", f"data.root={pbc128}", "data.image_size=32", "data.num_workers=0"]))
    dm.setup("fit")
    counts = {s: dm.class_counts(s) for s in ("train", "val", "test")}
    assert (
        sum(c.sum() for c in counts.values())
        == 13659 - dm.meta["dedup"]["in_class_duplicates_removed"] - dm.meta["dedup"]["cross_class_images_dropped"]
    )
    total = sum(counts.values())
    assert total.tolist() == [970, 2488, 1241, 2314, 971, 1135, 2662, 1878]  # the README's per-class counts
    assert np.allclose(counts["test"] / total, 0.1, atol=0.01)  # stratified: every class ~10 % in test
    assert dm.dataset("train")[0][0].shape == (3, 32, 32)
