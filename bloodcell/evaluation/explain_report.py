"""Grad-CAM in evaluate.py (`explain=gradcam`: a PNG grid + the heat-map cell share per set in metrics.json) and in
folder prediction (`predict_dir=DIR explain=true`: one overlay PNG per image). The heat-maps are `explain.py`'s."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.data.images import decode_file, visible_files
from bloodcell.errors import ConfigError, DataError
from bloodcell.evaluation.explain import CELL_RIM, LOBE_GAP, METHOD, cell_shares, evenly_spaced, explain_prepared, overlay, prepare
from bloodcell.evaluation.inference import Member, common_preprocess, datamodule_for

log = logging.getLogger(__name__)

EXPLAIN_MODES = (METHOD,)
GRID_FILE = "gradcam_grid.png"
MASK_NOTE = (f"white cell = convex hull of the nucleus (2nd Otsu level of optical density; lobes within {LOBE_GAP:g}×side joined) "
             f"grown by {CELL_RIM:g}× its equivalent radius; cam_cell_share = Σ cam·mask / Σ cam, averaged over images")


def explain_mode(value: Any) -> str | None:
    """`explain=` as given → None (off) or "gradcam"; `true` means gradcam (the one method)."""
    if value in (None, False, "", "none", "false", "null"):
        return None
    if value is True or str(value).lower() in ("true", METHOD):
        return METHOD
    raise ConfigError(f"explain={value!r}: use gradcam (or true), or leave it unset.")


def check_explain_sets(dirs: Sequence[str]) -> None:
    """Every explain_sets entry is an existing folder (checked before the slow part)."""
    for d in dirs:
        if not Path(d).expanduser().is_dir():
            raise DataError(f"explain_sets: {d} is not a folder; give folders of images, e.g. explain_sets=[DIR_A,DIR_B].")


def plot_explain_grid(images: np.ndarray, maps: np.ndarray, labels: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                      picks: dict[str, tuple[list[int], list[int]]], path: Path, title: str) -> Path:
    """Per class (row): correct predictions, then wrong ones, each image with its heat-map for the predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in classes if c in picks]
    cols = max(1, max(len(a) + len(b) for a, b in picks.values()) if picks else 1)
    fig, axes = plt.subplots(len(rows) or 1, cols, figsize=(1.9 * cols, 2.1 * max(1, len(rows))), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, cls in enumerate(rows):
        correct, wrong = picks[cls]
        axes[r, 0].text(-0.08, 0.5, cls, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=10, rotation=90)
        for c, (i, ok) in enumerate([(i, True) for i in correct] + [(i, False) for i in wrong]):
            pred = int(probs[i].argmax())
            ax = axes[r, c]
            ax.imshow(overlay(images[i], maps[i], min_side=images[i].shape[0]))
            ax.set_title(f"{'✓' if ok else '✗ → '}{'' if ok else classes[pred]} {probs[i, pred]:.2f}", fontsize=8,
                         color="#1a7f37" if ok else "#cf222e")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0.02, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grid_picks(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], per_class: int) -> dict[str, tuple[list[int], list[int]]]:
    """Per true class: up to `per_class` correct (evenly spread) and the `per_class` most confident wrong predictions' indices."""
    picks, preds, confidence = {}, probs.argmax(1), probs.max(1)
    for k, cls in enumerate(classes):
        correct = np.flatnonzero((labels == k) & (preds == k))
        wrong = np.flatnonzero((labels == k) & (preds != k))
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
        if len(correct) or len(wrong):
            picks[cls] = (correct[evenly_spaced(len(correct), per_class)].tolist(), wrong[:per_class].tolist())
    return picks


def folder_images(root: str | Path, k: int | None) -> tuple[list[np.ndarray], list[Path]]:
    """Decoded images of up to k files (evenly spaced, sorted walk) under a folder tree; unreadable files are skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"explain_sets: {root} is not a folder of images.")
    files = visible_files(root)
    files = [files[i] for i in evenly_spaced(len(files), k)]
    decoded = [(decode_file(f), f) for f in files]
    return [img for (img, _), _f in decoded if img is not None], [f for (img, _), f in decoded if img is not None]


def explain_evaluation(members: list[Member], data_cfg: Any, split: str, labels: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                       opts: Any, how: Any, output_dir: Path) -> dict:
    """Grad-CAM grid of the evaluated set + the heat-map cell share on it and on every `explain_sets` folder."""
    if opts.explain_max_images is None or opts.explain_per_class is None:
        raise ConfigError("explain needs explain_max_images and explain_per_class (conf/evaluate.yaml holds their defaults).")
    common_preprocess(members)  # heat-maps of members must line up: one preprocessing
    batch = int((how.loader_overrides or {}).get("eval_batch_size") or 32)
    dm, _ = datamodule_for(members[0].module, data_cfg, how.loader_overrides or {})
    ds = dm.dataset(split)
    preds = probs.argmax(1)
    picks = grid_picks(labels, probs, classes, int(opts.explain_per_class))
    measured = evenly_spaced(len(ds), int(opts.explain_max_images))
    grid_idx = sorted({i for a, b in picks.values() for i in a + b})
    idx = np.array(sorted(set(measured.tolist()) | set(grid_idx)), dtype=int)
    images = np.stack([ds[int(i)][0].permute(1, 2, 0).numpy() for i in idx]) if len(idx) else np.zeros((0, 1, 1, 3), np.uint8)
    _, maps = explain_prepared(members, images, batch, targets=preds[idx])
    pos = {int(i): j for j, i in enumerate(idx)}
    at = [pos[int(i)] for i in measured]
    sets = {split: {**cell_shares(images[at], maps[at]), "source": dm.source.describe()}}
    sub_picks = {c: ([pos[i] for i in a], [pos[i] for i in b]) for c, (a, b) in picks.items()}
    plot_explain_grid(images, maps, labels[idx], probs[idx], classes, sub_picks, output_dir / GRID_FILE,
                      f"Grad-CAM for the predicted class — {split} set (per class: correct, then wrong)")
    for folder in opts.explain_sets or []:
        raw, _ = folder_images(folder, int(opts.explain_max_images))
        prepared = prepare(members, raw)
        _, fmaps = explain_prepared(members, prepared, batch)
        sets[Path(folder).name] = {**cell_shares(prepared, fmaps), "source": str(Path(folder).expanduser().resolve())}
    for name, s in sets.items():
        log.info("Grad-CAM heat-map mass on the white cell, %s: %s (mask covers %s of the image; %d of %d images measured)",
                 name, _pct(s["cam_cell_share"]), _pct(s["cell_area_share"]), s["n_measured"], s["n"])
    return {"method": METHOD, "library": "grad-cam (pytorch_grad_cam.GradCAM)", "target": "predicted class",
            "layer": "backbone feature map (forward_features)", "mask": MASK_NOTE, "grid": GRID_FILE, "sets": sets}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def format_explain_md(explain: dict) -> str:
    """The report.md section: the cell-share table per set and the grid."""
    lines = ["## Grad-CAM: where the model looks", "",
             "| set | images measured | heat-map mass on the white cell | cell's share of the image | concentration |",
             "|---|---|---|---|---|"]
    for name, s in explain["sets"].items():
        conc = "–" if s["concentration"] is None else f"{s['concentration']:.2f}×"
        lines.append(f"| {name} | {s['n_measured']} / {s['n']} | {_pct(s['cam_cell_share'])} | {_pct(s['cell_area_share'])} | {conc} |")
    lines += ["", f"Mask: {explain['mask']}. A heat-map spread evenly scores the cell's share of the image (concentration 1×).", "",
              f"![Grad-CAM grid]({explain['grid']})", ""]
    return "\n".join(lines)


def overlay_path(path: Path, root: Path, out_dir: Path) -> Path:
    """Where a file's overlay goes: its path under root, mirrored under out_dir, with `.cam.png` appended (no collisions)."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        rel = Path(Path(path).name)
    return out_dir / rel.with_name(rel.name + ".cam.png")


def write_overlays(members: Sequence[Member], images: Sequence[np.ndarray], paths: Sequence[Path], root: Path, out_dir: Path,
                   batch_size: int) -> list[Path]:
    """One PNG per image: the network's input with the ensemble's Grad-CAM for its predicted class blended in."""
    from PIL import Image

    prepared = prepare(members, images)
    _, maps = explain_prepared(members, prepared, batch_size)
    written = []
    for img, cam, path in zip(prepared, maps, paths):
        target = overlay_path(path, root, out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(img, cam)).save(target)
        written.append(target)
    return written
