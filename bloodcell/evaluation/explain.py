"""Grad-CAM heat-maps (the `grad-cam` library) for any timm backbone, the white-cell mask and the shortcut measure.

Heat-maps are taken on the backbone's last feature map (`forward_features`, through an identity `tap` module, so
every timm CNN and the small CNN need no per-architecture layer name; ViT-style token maps are reshaped to their
patch grid), for each image's predicted class (the ensemble's), at the network's input resolution. An ensemble's
map is the weighted mean of its members' maps (members must share their preprocessing: the maps must line up).

Shortcut measure: the share of heat-map mass that falls on the white cell, `Σ cam·mask / Σ cam`, averaged over a
set. The white-cell mask of an input image (the network's S×S input): the nucleus is the darkest stained structure
(optical density above the second of two Otsu levels, as in `find_nucleus`), the component that is large and near
the centre plus every dark component within `LOBE_GAP` × side of it (lobes, granule clusters, transitively); the
mask is its filled convex hull grown by a rim of `CELL_RIM` × the hull's equivalent radius (the cytoplasm).
`cell_area_share` (the mask's share of the image) is what a heat-map spread evenly would score; a model that looks
at the background and red cells scores near or below it.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from bloodcell.data.preprocess import optical_density, otsu_threshold
from bloodcell.errors import ConfigError
from bloodcell.evaluation.inference import Member, common_preprocess
from bloodcell.evaluation.metrics import average_probs

# the white-cell mask's definition (part of the measure, not tuned per run): lobes closer than LOBE_GAP × side join the
# nucleus; the cytoplasm rim is CELL_RIM × the nucleus hull's equivalent radius
LOBE_GAP = 0.15
CELL_RIM = 0.35
OVERLAY_MIN_SIDE = 224  # overlays are upscaled to at least this many pixels per side (readable heat-maps of 64–96 px inputs)
METHOD = "gradcam"


class CamNet(nn.Module):
    """A Classifier re-wired for Grad-CAM: normalised NCHW float → logits, with an identity `tap` on the feature map."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.tap = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.classifier.backbone
        feats = self.tap(backbone.forward_features(x))
        return self.classifier.head(backbone.forward_head(feats))


def tokens_to_map(backbone: nn.Module):
    """reshape_transform for token outputs (B×N×C, ViT-like) → B×C×h×w on the patch grid; None for CNN feature maps."""
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            return t
        t = t[:, prefix:]
        side = int(round(t.shape[1] ** 0.5))
        if side * side != t.shape[1]:
            raise ConfigError(f"Grad-CAM: the backbone's feature output {tuple(t.shape)} is not a square token grid.")
        return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


def to_batch(images: np.ndarray) -> torch.Tensor:
    """N×S×S×3 uint8 → N×3×S×S uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


@torch.inference_mode()
def ensemble_probs_prepared(members: Sequence[Member], images: np.ndarray, batch_size: int) -> np.ndarray:
    """Weighted-mean probabilities for images already through the members' common Preprocess."""
    outs = []
    for m in members:
        module = m.module.eval()
        device = module.mean.device
        outs.append(np.concatenate([module(to_batch(images[i : i + batch_size]).to(device)).float().softmax(-1).cpu().numpy()
                                    for i in range(0, len(images), batch_size)]))
    return average_probs(outs, [m.weight for m in members]) if len(outs) > 1 else outs[0]


def gradcam_maps(member: Member, images: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
    """N×S×S heat-maps in [0, 1] (grad-cam's GradCAM, ReLU and per-image min–max) of one member for the target classes."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = member.module.eval()
    net = CamNet(module.model)
    cam = GradCAM(model=net, target_layers=[net.tap], reshape_transform=tokens_to_map(module.model.backbone))
    out = []
    params = list(net.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:  # gradients flow to the feature map through the input only: no parameter gradients to compute
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for i in range(0, len(images), batch_size):
                x = module.preprocess(to_batch(images[i : i + batch_size]).to(module.mean.device)).requires_grad_(True)
                out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets[i : i + batch_size]]))
    finally:
        cam.activations_and_grads.release()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *images.shape[1:3]), np.float32)


def explain_prepared(members: Sequence[Member], images: np.ndarray, batch_size: int,
                     targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities N×K, heat-maps N×S×S) for prepared images; targets default to the ensemble's predicted classes."""
    probs = ensemble_probs_prepared(members, images, batch_size)
    targets = probs.argmax(1) if targets is None else np.asarray(targets)
    w = np.array([m.weight for m in members], dtype=np.float64)
    maps = sum(wi / w.sum() * gradcam_maps(m, images, targets, batch_size) for wi, m in zip(w, members))
    return probs, np.asarray(maps, dtype=np.float32)


def nucleus_components(img: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the nucleus near the centre with its lobes/granule clusters (dark stained components), or None."""
    h, w = img.shape[:2]
    s = min(h, w)
    od = cv2.GaussianBlur(optical_density(img), (0, 0), max(0.5, s / 256))
    stained = od[od > otsu_threshold(od)]
    if stained.size < 16:
        return None
    dark = (od > otsu_threshold(stained)).astype(np.uint8)  # second Otsu level: nucleus, not red cells or cytoplasm
    r = max(1, s // 128)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    n, labels, stats, cents = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if n < 2:
        return None
    areas, cents = stats[1:, cv2.CC_STAT_AREA].astype(np.float64), cents[1:, ::-1]
    dist = np.hypot(cents[:, 0] - h / 2, cents[:, 1] - w / 2) / s
    main = int(np.argmax(areas * np.exp(-((dist / 0.25) ** 2)))) + 1  # as find_nucleus: large and near the centre
    big = set((np.flatnonzero(areas > 0.05 * areas[main - 1]) + 1).tolist())
    g = max(1, int(round(LOBE_GAP * s)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1))
    keep = {main}
    for _ in range(8):  # join lobes transitively: components within LOBE_GAP of the kept ones
        grown = cv2.dilate(np.isin(labels, sorted(keep)).astype(np.uint8), kernel)
        new = {int(v) for v in np.unique(labels[grown > 0])} & big
        if new <= keep:
            break
        keep |= new
    return np.isin(labels, sorted(keep))


def cell_mask(img: np.ndarray) -> np.ndarray | None:
    """Boolean S×S white-cell mask: the convex hull of the nucleus (lobes joined) grown by a cytoplasm rim; None without a nucleus."""
    nucleus = nucleus_components(img)
    if nucleus is None or not nucleus.any():
        return None
    pts = np.column_stack(np.nonzero(nucleus))[:, ::-1].astype(np.int32)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    rim = max(1, int(round(CELL_RIM * np.sqrt(mask.sum() / np.pi))))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1)))
    return mask.astype(bool)


def cell_shares(images: np.ndarray, maps: np.ndarray) -> dict:
    """Mean share of heat-map mass on the white-cell mask, and the mask's mean share of the image, over a set."""
    cam_share, area_share = [], []
    no_mask = flat = 0
    for img, cam in zip(images, maps):
        mask = cell_mask(img)
        if mask is None:
            no_mask += 1
            continue
        total = float(cam.sum())
        if total <= 0:
            flat += 1
            continue
        cam_share.append(float(cam[mask].sum()) / total)
        area_share.append(float(mask.mean()))
    n = len(cam_share)
    out = {"n": int(len(images)), "n_measured": n, "n_no_nucleus": no_mask, "n_flat_map": flat,
           "cam_cell_share": float(np.mean(cam_share)) if n else None, "cell_area_share": float(np.mean(area_share)) if n else None}
    out["concentration"] = out["cam_cell_share"] / out["cell_area_share"] if n and out["cell_area_share"] else None
    return out


def prepare(members: Sequence[Member], images: Sequence[np.ndarray]) -> np.ndarray:
    """Decoded RGB uint8 images of any size → N×S×S×3 through the members' common Preprocess."""
    prep = common_preprocess(members)
    return np.stack([prep(img) for img in images]) if len(images) else np.zeros((0, prep.image_size, prep.image_size, 3), np.uint8)


def cam_cell_share(members: Sequence[Member], images: Sequence[np.ndarray], batch_size: int = 32) -> dict:
    """The shortcut measure on decoded images of any size (e.g. a cross-lab folder): `cell_shares` of their Grad-CAM maps.

    batch_size only splits the work (results do not depend on it).
    """
    prepared = prepare(members, images)
    _, maps = explain_prepared(members, prepared, batch_size)
    return cell_shares(prepared, maps)


def evenly_spaced(n: int, k: int | None) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k is None or ≥ n): a deterministic, class-mixed subset."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def overlay(img: np.ndarray, cam: np.ndarray, min_side: int = OVERLAY_MIN_SIDE) -> np.ndarray:
    """RGB uint8 image with the heat-map blended in (jet colours, opacity rising with the map: cold parts stay visible),
    upscaled to at least min_side pixels."""
    side = max(min_side, img.shape[0])
    big = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC) if side != img.shape[0] else img
    heat = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR) if side != cam.shape[0] else cam
    heat = np.clip(heat, 0, 1).astype(np.float32)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    alpha = (0.15 + 0.5 * heat)[..., None]
    return np.clip((1 - alpha) * big.astype(np.float32) + alpha * colour + 0.5, 0, 255).astype(np.uint8)
