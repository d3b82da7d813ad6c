"""Grad-CAM (grad-cam library) on any backbone, the white-cell mask, the heat-map cell share, and their use in
evaluate.py (explain=gradcam: grid + metrics.json) and folder prediction (explain=true: one overlay per image)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from bloodcell.config import compose
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.explain import CamNet, cam_cell_share, cell_mask, cell_shares, gradcam_maps, overlay, tokens_to_map
from bloodcell.evaluation.explain_report import explain_mode
from bloodcell.evaluation.inference import Member, load_members
from bloodcell.evaluation.predict import predict_folder
from bloodcell.evaluation.runner import run
from bloodcell.models.factory import Classifier, build_classifier
from bloodcell.module import BloodCellModule
from tests.conftest import PBC128, SAMPLE
from tests.test_predict import make_checkpoint, sample_images

pytest.importorskip("pytorch_grad_cam")
ZHENG2 = PBC128.parent / "crosslab" / "zheng2"


def synthetic_smear(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Pale background, four red cells near the corners, a white cell in the middle (lilac cytoplasm, two dark lobes)."""
    img = np.full((size, size, 3), (250, 232, 208), np.uint8)
    c = size // 2
    for y, x in ((14, 14), (14, size - 14), (size - 14, 14), (size - 14, size - 14)):
        cv2.circle(img, (x, y), 11, (225, 160, 170), -1)
    cell = np.zeros((size, size), np.uint8)
    cv2.circle(cell, (c, c), 22, 1, -1)
    img[cell > 0] = (205, 180, 215)
    for dx in (-9, 9):
        cv2.circle(img, (c + dx, c + 2), 8, (95, 55, 135), -1)
    return img, cell.astype(bool)


def test_cell_mask_on_a_synthetic_smear():
    img, cell = synthetic_smear()
    mask = cell_mask(img)
    inside, covered = (mask & cell).sum() / mask.sum(), (mask & cell).sum() / cell.sum()
    # nucleus hull + rim: inside the cell and most of it (a wide pale cytoplasm is undercounted)
    assert inside > 0.95 and covered > 0.5, (inside, covered)
    assert mask[48, 39] and mask[50, 57]  # both lobes
    assert not mask[:28, :28].any() and not mask[-28:, -28:].any()  # no red cell
    assert cell_mask(np.full((64, 64, 3), 240, np.uint8)) is None  # nothing stained: no mask


def test_cell_shares_arithmetic():
    img, cell = synthetic_smear()
    mask = cell_mask(img)
    on_cell = cell_shares(img[None], mask[None].astype(np.float32))
    uniform = cell_shares(img[None], np.ones((1, 96, 96), np.float32))
    assert on_cell["cam_cell_share"] == pytest.approx(1.0)
    assert uniform["cam_cell_share"] == pytest.approx(mask.mean()) and uniform["concentration"] == pytest.approx(1.0)
    flat = cell_shares(img[None], np.zeros((1, 96, 96), np.float32))
    assert flat["n_flat_map"] == 1 and flat["cam_cell_share"] is None


class BrightnessBackbone(nn.Module):
    """Feature map = the red channel at full resolution; head = its mean: Grad-CAM must light up the bright pixels."""

    num_features = 1

    def forward_features(self, x):
        return x[:, :1]

    def forward_head(self, x):
        return x.mean(dim=(2, 3))


def test_gradcam_localises_and_keeps_orientation():
    module = BloodCellModule(model={"_target_": "bloodcell.models.build_classifier", "backbone": "bloodcell_small_cnn"},
                             optim={}, classes=["a", "b"], image_size=32)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        head.bias.zero_()
    module.model = Classifier(BrightnessBackbone(), head, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, 2:8, 20:30, 0] = 255  # top right
    maps = gradcam_maps(Member("x", module), img, np.array([0]), 4)
    assert maps.shape == (1, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert maps[0, 2:8, 20:30].mean() > 0.9 and maps[0, 16:, :16].max() < 0.1


SLOW = pytest.mark.slow


@pytest.mark.parametrize("backbone", ["bloodcell_small_cnn", "resnet18", "tf_efficientnet_lite0",
                                      *(pytest.param(b, marks=SLOW) for b in ("mobilenetv3_small_050", "densenet121", "vgg11"))])
def test_camnet_is_the_classifier_for_any_timm_backbone(backbone):
    clf = build_classifier(backbone, num_classes=8, head={"hidden": [16]}).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(CamNet(clf)(x), clf(x), atol=1e-5)


def test_token_maps_are_reshaped_to_the_patch_grid():
    backbone = nn.Module()
    backbone.num_prefix_tokens = 1
    t = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    m = tokens_to_map(backbone)(t)
    assert m.shape == (2, 3, 4, 4) and torch.equal(m[:, :, 0, 1], t[:, 2])


def test_explain_mode_values():
    assert explain_mode(None) is None and explain_mode(False) is None and explain_mode("none") is None
    assert explain_mode(True) == "gradcam" and explain_mode("gradcam") == "gradcam"
    with pytest.raises(ConfigError):
        explain_mode("lime")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cache_dir) -> str:
    return make_checkpoint(tmp_path_factory.mktemp("explain_ckpt") / "run", cache_dir, 48)


def test_overlay_and_cam_cell_share_on_raw_images(ckpt):
    members = load_members(ckpt)
    raw = [cv2.imread(str(p))[..., ::-1].copy() for p in sample_images(4)]
    out = cam_cell_share(members, raw)
    assert out["n"] == 4 and 0 <= out["cam_cell_share"] <= 1 and 0 < out["cell_area_share"] < 1
    assert overlay(raw[0][:48, :48], np.random.default_rng(0).random((48, 48), dtype=np.float32)).shape == (224, 224, 3)


def test_evaluate_with_gradcam_writes_grid_and_cell_share(ckpt, compose_cfg, tmp_path):
    extra = tmp_path / "other_lab"
    shutil.copytree(SAMPLE / "lymphocyte", extra / "lymphocyte")
    cfg = compose_cfg([f"ckpt={ckpt}", "explain=gradcam", f"explain_sets=[{extra}]", "explain_max_images=12", "explain_per_class=2"],
                      config_name="evaluate")
    metrics = run(cfg)
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())["explain"]
    assert saved == json.loads(json.dumps(metrics["explain"]))
    assert set(saved["sets"]) == {"test", "other_lab"} and saved["sets"]["other_lab"]["n"] == 12
    for s in saved["sets"].values():
        assert 0 <= s["cam_cell_share"] <= 1 and s["n_measured"] > 0
    grid = cv2.imread(str(out / saved["grid"]))
    assert grid is not None and grid.shape[0] > 500  # one row per class
    assert "Grad-CAM: where the model looks" in (out / "report.md").read_text()
    with pytest.raises(DataError, match="explain_sets"):
        run(compose_cfg([f"ckpt={ckpt}", "explain=gradcam", f"explain_sets=[{tmp_path / 'missing'}]", "overwrite=true"],
                        config_name="evaluate"))


def test_predict_folder_writes_an_overlay_per_image(ckpt, tmp_path):
    root = tmp_path / "scans"
    (root / "a").mkdir(parents=True)
    for p in sample_images(3):
        shutil.copy(p, root / "a" / p.name)
    (root / "a" / "bad.png").write_text("not a png")
    summary = predict_folder([ckpt], root, tmp_path / "out" / "p.csv", device="cpu", batch_size=2, explain=True)
    overlays = sorted((tmp_path / "out" / "overlays" / "a").glob("*.cam.png"))
    assert summary.predicted == 3 and summary.errors == 1 and len(overlays) == 3
    assert {o.name for o in overlays} == {p.name + ".cam.png" for p in sample_images(3)}
    assert cv2.imread(str(overlays[0])).shape == (224, 224, 3)


@pytest.mark.skipif(not ZHENG2.is_dir(), reason=f"{ZHENG2} not present")
def test_cell_share_on_the_cross_lab_folder(ckpt):
    from bloodcell.evaluation.explain_report import folder_images

    raw, _ = folder_images(ZHENG2, 8)
    out = cam_cell_share(load_members(ckpt), raw)
    assert out["n"] == 8 and out["n_no_nucleus"] == 0 and out["n_measured"] + out["n_flat_map"] == 8  # a mask on every image
    assert 0 <= out["cam_cell_share"] <= 1


def test_compose_evaluate_has_explain_defaults():
    cfg = compose("evaluate", ["ckpt=x"])
    assert cfg.explain is None and cfg.explain_max_images > 0 and cfg.explain_per_class > 0 and list(cfg.explain_sets) == []
