"""Preview what the model sees: a grid per class, originals beside augmented samples (`python -m bloodcell.tools.preview`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bloodcell.errors import BloodcellError


def with_batch_ops(transform, batch_augment):
    """A per-image transform (Albumentations style, HWC uint8) followed by on-device batch ops applied to a batch of one.

    What a training image goes through with `augment=...` and `batch_augment=...` together; for previews.
    """
    if batch_augment is None:
        return transform
    import torch

    def apply(image: np.ndarray) -> dict:
        image = transform(image=image)["image"] if transform is not None else image
        batch = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        return {"image": batch_augment(batch)[0].permute(1, 2, 0).numpy()}

    return lambda image: apply(image)


def preview_grid(images: np.ndarray, labels: np.ndarray, classes: list[str], transform, rows: int, samples: int,
                 seed: int) -> tuple[np.ndarray, list[dict]]:
    """Grid (uint8 RGB): per class `rows` rows of [original | `samples` augmented draws], a gap after each original."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]
    gap = 4
    tiles, picked = [], []
    for c, name in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        chosen = rng.choice(idx, min(rows, len(idx)), replace=False) if len(idx) else []
        for i in chosen:
            original = np.asarray(images[i])
            row = [original, np.full((h, gap, 3), 255, np.uint8)]
            row += [transform(image=original.copy())["image"] if transform is not None else original for _ in range(samples)]
            tiles.append(np.concatenate(row, axis=1))
            picked.append({"class": name, "index": int(i)})
    if not tiles:
        raise BloodcellError("no images to preview: the chosen data's training split is empty.")
    return np.concatenate(tiles, axis=0), picked


def save_preview(grid: np.ndarray, picked: list[dict], rows_per_class: int, tile: int, title: str, info: dict, out_dir: Path) -> Path:
    """Draw the grid with class labels to DIR/preview.png and record what it shows in DIR/preview.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "preview.png"
    dpi = 100
    fig = plt.figure(figsize=(grid.shape[1] / dpi + 2.0, grid.shape[0] / dpi + 0.5), dpi=dpi)
    ax = fig.add_axes(
        (1.9 / (grid.shape[1] / dpi + 2.0), 0.0, grid.shape[1] / dpi / (grid.shape[1] / dpi + 2.0), grid.shape[0] / (grid.shape[0] + 50))
    )
    ax.imshow(grid, interpolation="nearest")
    centres = [(k + 0.5) * tile for k in range(len(picked))]
    ax.set_yticks(centres[::rows_per_class] if rows_per_class else centres, [p["class"] for p in picked][::rows_per_class])
    ax.set_xticks([tile / 2], ["original"])
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    (out_dir / "preview.json").write_text(json.dumps({**info, "images": picked}, indent=1))
    return png
