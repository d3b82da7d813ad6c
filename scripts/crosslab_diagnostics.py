"""Diagnostics of the cross-lab gap (issue 12): what a cheap change would do to a folder, without training a row.

    python scripts/crosslab_diagnostics.py zoom CKPT [--folder DIR] [--zooms 1 1.2 1.4 1.6 1.8]
        every image centre-cropped to 1/z of its side before the checkpoint's own preprocessing: how much of the gap
        one global magnification factor explains (a diagnostic sweep on labelled images, NOT a way to pick a zoom)
    python scripts/crosslab_diagnostics.py em PREDICTIONS.csv ... [--train-root DIR]
        EM label-shift adaptation (Saerens et al. 2002) of saved cross-lab probabilities (evaluate.py's
        crosslab_<folder>_predictions.csv): re-weights the classes to the folder's estimated class prior
    python scripts/crosslab_diagnostics.py prior PREDICTIONS.csv ... [--train-root DIR] [--tau 1]
        post-hoc logit adjustment (Menon et al. 2021) of saved cross-lab probabilities: divide out the training class
        prior (tau = 1: the decision that is Bayes-optimal for macro recall), i.e. assume nothing about the folder's mix
    python scripts/crosslab_diagnostics.py probe BACKBONE:WEIGHT_SOURCE [--folder DIR] [--train-root DIR]
        linear probe on the frozen ImageNet backbone (no fine-tuning at all): does fine-tuning on PBC cost transfer?

    python scripts/crosslab_diagnostics.py amplitude CKPT ... [--lam 0.5]
        test-time transfer of each image's amplitude spectrum towards training images' (FDA, Yang & Soatto 2020, run
        target → source): 8 views, each mixing the image's amplitude with that of one training-split image per class
        (seed 0) at λ, own phase kept; probabilities averaged. Scored on pbc128's test split (at each checkpoint's own
        preprocessing; the checkpoints must have been trained on pbc128, whose train split gives the amplitudes) and the folder.

Each prints one line per setting (accuracy, macro recall over the classes present, right per class) and, with
--json F, appends its results to F. Evaluation-only folders stay evaluation-only: nothing here trains on them.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(ROOT := Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bloodcell.data.classes import CLASS_NAMES, canonical_class
from bloodcell.data.images import read_image, visible_files
from bloodcell.evaluation.crosslab import crosslab_metrics

DEFAULT_FOLDER = ROOT.parent / "shared/data/crosslab/zheng2"
DEFAULT_TRAIN = ROOT.parent / "shared/data/pbc128"


def labelled_images(folder: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Decoded images and canonical class indices of a class-sub-folder tree."""
    labelled = [(f, cls) for f in visible_files(folder) if (cls := canonical_class(f.parent.name))]
    return [read_image(f) for f, _ in labelled], np.array([CLASS_NAMES.index(cls) for _, cls in labelled])


def summary(name: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    """crosslab_metrics plus the count right per class, printed as one line."""
    m = crosslab_metrics(probs, labels, CLASS_NAMES)
    pred = probs.argmax(1)
    right = {CLASS_NAMES[c]: int(np.sum(pred[labels == c] == c)) for c in np.unique(labels)}
    print(f"{name:<40} accuracy {m['accuracy']:.3f}  macro recall {m['macro_recall']:.3f}  right {right}")
    return {"setting": name, "accuracy": m["accuracy"], "macro_recall": m["macro_recall"], "right": right}


def centre_zoom(img: np.ndarray, zoom: float) -> np.ndarray:
    """The centre 1/zoom of the image (zoom ≥ 1)."""
    h, w = img.shape[:2]
    side = int(round(min(h, w) / zoom))
    top, left = (h - side) // 2, (w - side) // 2
    return img[top : top + side, left : left + side]


def run_zoom(args: argparse.Namespace) -> list[dict]:
    from bloodcell.evaluation.explain import ensemble_probs_prepared, prepare
    from bloodcell.evaluation.inference import load_members

    members = load_members([args.ckpt])
    images, labels = labelled_images(Path(args.folder))
    return [summary(f"{Path(args.ckpt).parts[-3]} zoom {z:g}",
                    ensemble_probs_prepared(members, prepare(members, [centre_zoom(i, z) for i in images]), 64), labels)
            for z in args.zooms]


def class_prior(train_root: Path) -> np.ndarray:
    """Class frequencies of a training folder (the prior the classifier's probabilities carry)."""
    counts = np.zeros(len(CLASS_NAMES))
    for d in Path(train_root).iterdir():
        if d.is_dir() and (cls := canonical_class(d.name)):
            counts[CLASS_NAMES.index(cls)] += len(visible_files(d))
    return counts / counts.sum()


def em_prior_adaptation(probs: np.ndarray, prior: np.ndarray, iters: int = 500, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Saerens et al. (2002): alternate posterior re-weighting and prior re-estimation; (adapted probs, target prior)."""
    target = prior.copy()
    adapted = probs
    for _ in range(iters):
        adapted = probs * (target / np.maximum(prior, 1e-12))
        adapted /= adapted.sum(1, keepdims=True)
        new = adapted.mean(0)
        if np.abs(new - target).max() < tol:
            break
        target = new
    return adapted, target


def rescored(args: argparse.Namespace, setting: str,
             rescore: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, dict]]) -> list[dict]:
    """Each saved predictions CSV scored as saved and after `rescore(probs, training prior)` (em, prior)."""
    prior = class_prior(Path(args.train_root))
    out = []
    for path in args.predictions:
        probs, labels = read_probabilities(path)
        name = Path(path).parent.name
        out.append(summary(f"{name} as saved", probs, labels))
        adjusted, extra = rescore(probs, prior)
        out.append(summary(f"{name} + {setting}", adjusted, labels) | extra)
    return out


def run_em(args: argparse.Namespace) -> list[dict]:
    def em(probs: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, dict]:
        adapted, target = em_prior_adaptation(probs, prior)
        return adapted, {"estimated_prior": dict(zip(CLASS_NAMES, target.round(3).tolist()))}

    return rescored(args, "EM prior", em)


def logit_adjust(probs: np.ndarray, prior: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Probabilities re-weighted by prior**-tau and renormalised: argmax of log p - tau log prior (Menon et al. 2021).

    Why: PBC's class mix is how the collection was assembled, not blood's or another lab's; with tau = 1 the decision
    no longer carries it (the balanced-error-optimal rule for calibrated probabilities). Unlike EM it estimates nothing
    from the folder, so confident errors cannot reinforce themselves.
    """
    weights = np.maximum(prior, 1e-12) ** -tau
    adjusted = probs * weights
    return adjusted / adjusted.sum(1, keepdims=True)


def read_probabilities(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, class indices) from an evaluation's predictions CSV."""
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in table])
    return probs, np.array([CLASS_NAMES.index(canonical_class(r["true"])) for r in table])


def run_prior(args: argparse.Namespace) -> list[dict]:
    return rescored(args, f"logit adjustment tau={args.tau:g}", lambda probs, prior: (logit_adjust(probs, prior, args.tau), {}))


@torch.inference_mode()
def features(net: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    """Pooled backbone features of N×S×S×3 uint8 images, normalised with the backbone's own mean/std."""
    from bloodcell.evaluation.explain import to_batch

    mean, std = torch.tensor(net.mean).view(1, 3, 1, 1), torch.tensor(net.std).view(1, 3, 1, 1)
    return torch.cat([net.backbone((to_batch(images[i : i + 256]).float() / 255 - mean) / std) for i in range(0, len(images), 256)])


def run_probe(args: argparse.Namespace) -> list[dict]:
    from bloodcell.data.preprocess import Preprocess
    from bloodcell.models.factory import build_classifier

    backbone, source = args.backbone.split(":")
    prep = Preprocess.resize_only(args.image_size)
    train_images, train_labels = labelled_images(Path(args.train_root))
    cross_images, cross_labels = labelled_images(Path(args.folder))
    net = build_classifier(backbone, len(CLASS_NAMES), weights_source=source).eval()
    f_all = features(net, np.stack([prep(i) for i in train_images]))
    f_cross = features(net, np.stack([prep(i) for i in cross_images]))
    order = np.random.default_rng(0).permutation(len(train_labels))
    test, train = order[: len(order) // 10], order[len(order) // 10 :]
    mu, sd = f_all[train].mean(0), f_all[train].std(0) + 1e-6
    head = torch.nn.Linear(f_all.shape[1], len(CLASS_NAMES))
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")
    x, y = (f_all[train] - mu) / sd, torch.from_numpy(train_labels[train])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        p_test = head((f_all[test] - mu) / sd).softmax(1).numpy()
        p_cross = head((f_cross - mu) / sd).softmax(1).numpy()
    return [summary(f"{backbone} frozen, own test (10 %)", p_test, train_labels[test]),
            summary(f"{backbone} frozen, {Path(args.folder).name}", p_cross, cross_labels)]


def source_amplitudes(train_images: np.ndarray, train_labels: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Amplitude spectra (C×3×S×S) of one training image per class, drawn with `seed`: every class's style, equally."""
    from bloodcell.evaluation.explain import to_batch

    rng = np.random.default_rng(seed)
    pick = [int(rng.choice(np.flatnonzero(train_labels == c))) for c in np.unique(train_labels)]
    return torch.fft.fft2(to_batch(train_images[pick]).float() / 255).abs()


@torch.inference_mode()
def amplitude_probs(module: torch.nn.Module, images: np.ndarray, sources: torch.Tensor | None, lam: float,
                    batch_size: int = 128) -> np.ndarray:
    """Probabilities of N×S×S×3 uint8 images as they are (sources None), or averaged over one view per source amplitude."""
    from bloodcell.augment.domain import mix_amplitude
    from bloodcell.evaluation.explain import to_batch

    out = []
    for i in range(0, len(images), batch_size):
        x = to_batch(images[i : i + batch_size])
        if sources is None:
            out.append(module(x).float().softmax(-1))
            continue
        spec = torch.fft.fft2(x.float() / 255)
        views = [(mix_amplitude(spec, amp.expand_as(spec), lam) * 255).round().to(torch.uint8) for amp in sources]
        out.append(torch.stack([module(v).float().softmax(-1) for v in views]).mean(0))
    return torch.cat(out).numpy()


def run_amplitude(args: argparse.Namespace) -> list[dict]:
    from hydra import compose, initialize_config_dir

    from bloodcell.evaluation.explain import prepare
    from bloodcell.evaluation.inference import datamodule_for, load_members

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        data_cfg = compose("evaluate", overrides=["data=pbc128", "ckpt=x"]).data  # the checkpoints' own source and split
    cross_images, cross_labels = labelled_images(Path(args.folder))
    out = []
    for ckpt in args.ckpts:
        member = load_members([ckpt])[0]
        module = member.module.eval()
        dm, _ = datamodule_for(module, data_cfg, {})
        train, test = dm.splits["train"], dm.splits["test"]
        sources = source_amplitudes(train.images(), train.labels)
        name = Path(ckpt).stem if Path(ckpt).parent.name != "checkpoints" else Path(ckpt).parts[-3]
        for set_name, images, labels in (("clean test", test.images(), test.labels),
                                         (Path(args.folder).name, prepare([member], cross_images), cross_labels)):
            for label, src in (("as is", None), (f"amplitude λ={args.lam:g}", sources)):
                out.append(summary(f"{name} {set_name} {label}", amplitude_probs(module, images, src, args.lam), labels)
                           | {"checkpoint": ckpt, "set": set_name})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    zoom = sub.add_parser("zoom")
    zoom.add_argument("ckpt")
    zoom.add_argument("--zooms", type=float, nargs="+", default=[1.0, 1.2, 1.4, 1.6, 1.8])
    em = sub.add_parser("em")
    em.add_argument("predictions", nargs="+")
    prior = sub.add_parser("prior")
    prior.add_argument("predictions", nargs="+")
    prior.add_argument("--tau", type=float, default=1.0, help="1 = divide out the training prior (fixed a priori, not tuned)")
    probe = sub.add_parser("probe")
    probe.add_argument("backbone", help="timm name:offline weight source, e.g. tf_efficientnet_lite0:efficientnet_lite0_pypi")
    probe.add_argument("--image-size", type=int, default=96)
    amplitude = sub.add_parser("amplitude")
    amplitude.add_argument("ckpts", nargs="+")
    amplitude.add_argument("--lam", type=float, default=0.5, help="0.5 = the mean of batch_augment=fourier's λ ~ U(0, 1); fixed a priori")
    for p in (zoom, em, prior, probe, amplitude):
        p.add_argument("--folder", default=str(DEFAULT_FOLDER))
        p.add_argument("--train-root", default=str(DEFAULT_TRAIN))
        p.add_argument("--json", help="append the results to this JSON file")
    args = parser.parse_args()
    results = {"zoom": run_zoom, "em": run_em, "prior": run_prior, "probe": run_probe, "amplitude": run_amplitude}[args.what](args)
    if args.json:
        path = Path(args.json)
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved.setdefault(args.what, []).extend(results)
        path.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
