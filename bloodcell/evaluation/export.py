"""Export one checkpoint or an ensemble as one portable model file (ONNX or TorchScript) with its own metadata.

The graph takes images already passed through the checkpoint's `Preprocess` (size × size uint8, NHWC by default,
or NCHW) and does the rest inside: uint8 → float, the backbone's own mean/std, network(s), softmax, the weighted
average of an ensemble's members. `Preprocess` (colour and magnification normalisation: numpy/OpenCV) cannot live
in a graph, so it travels as metadata: a caller applies `Preprocess.from_description(metadata["preprocess"])` (or the same steps
in its own language) to each decoded RGB image first; `load_exported` does exactly that in Python.

Every export is checked at once: the file is loaded back (ONNX Runtime, or `torch.jit.load`) and its probabilities
are compared with the PyTorch path of evaluate.py on real images (the checkpoint's test split, topped up from its
val/train splits, or the bundled sample); max |Δprob| is printed, stored in the metadata and in `<out>.json`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bloodcell.config import PROJECT_ROOT, to_plain
from bloodcell.data.images import decode_file, visible_files
from bloodcell.data.preprocess import Preprocess
from bloodcell.errors import BloodcellError, ConfigError
from bloodcell.evaluation.inference import Member, common_preprocess, datamodule_for, load_members, require_checkpoints
from bloodcell.evaluation.metrics import average_probs
from bloodcell.evaluation.report import write_json

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
LAYOUTS = ("nhwc", "nchw")
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
METADATA_FILE = "bloodcell.json"  # TorchScript: the metadata as an extra file inside the archive
SAMPLE_DIR = PROJECT_ROOT / "data" / "sample"


class ExportModel(nn.Module):
    """uint8 images (N×S×S×3 or N×3×S×S) → probabilities: per member normalise → network → softmax, weighted mean."""

    def __init__(self, members: Sequence[Member], layout: str) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ConfigError(f"layout={layout!r}: use one of {LAYOUTS}.")
        self.nhwc = layout == "nhwc"
        self.nets = nn.ModuleList([m.module.model for m in members])
        self.register_buffer("mean", torch.stack([m.module.mean.detach().float().cpu() for m in members]))
        self.register_buffer("std", torch.stack([m.module.std.detach().float().cpu() for m in members]))
        w = torch.tensor([m.weight for m in members], dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2) if self.nhwc else image
        x = x.float()
        probs = torch.zeros(())
        for i, net in enumerate(self.nets):
            probs = probs + self.weights[i] * net((x - self.mean[i]) / self.std[i]).softmax(dim=-1)
        return probs


def export_metadata(members: Sequence[Member], prep: Preprocess, layout: str, fmt: str) -> dict:
    """What a caller needs besides the graph: classes, input layout/size, preprocessing, normalisation, members."""
    s, k = prep.image_size, len(members[0].module.classes)
    shape = ["batch", s, s, 3] if layout == "nhwc" else ["batch", 3, s, s]
    return {
        "format": fmt,
        "classes": list(members[0].module.classes),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": layout, "shape": shape},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", k], "meaning": "softmax probabilities"},
        "image_size": s,
        "preprocess": prep.describe(),
        "preprocess_note": "apply bloodcell.data.preprocess.Preprocess.from_description(preprocess) to each decoded RGB image first",
        "members": [{**m.describe(), "mean": list(m.module.model.mean), "std": list(m.module.model.std)} for m in members],
        "normalisation": "inside the graph: (pixel - 255*mean) / (255*std) per member",
    }


def parity_images(members: Sequence[Member], n: int) -> tuple[np.ndarray, str]:
    """Up to n preprocessed images (N×S×S×3 uint8): the checkpoint's test split (+ val, train), else the bundled sample."""
    module = members[0].module
    if to_plain(module.hparams.data):
        try:
            dm, _ = datamodule_for(module, None, {})
            parts, have, used = [], 0, []
            for split in ("test", "val", "train"):
                k = min(n - have, len(dm.splits[split]))
                if k > 0:
                    parts.append(np.asarray(dm.splits[split].images()[:k]))
                    have += k
                    used.append(f"{split} {k}")
            if have:
                return np.concatenate(parts), f"{json.dumps(dm.source.describe())} ({', '.join(used)})"
        except BloodcellError as exc:
            log.warning("the checkpoint's own data is not available (%s); checking parity on the bundled sample", exc)
    prep = module.preprocessing
    images = [prep(img) for img, _ in map(decode_file, visible_files(SAMPLE_DIR)[: max(n, 0)]) if img is not None]
    if not images:
        raise ConfigError(f"no images to check parity on: the checkpoint's data is unavailable and {SAMPLE_DIR} holds none.")
    return np.stack(images[:n]), f"bundled sample {SAMPLE_DIR} ({min(n, len(images))} images)"


@torch.inference_mode()
def reference_probs(members: Sequence[Member], images: np.ndarray, batch_size: int) -> np.ndarray:
    """evaluate.py's PyTorch path (module(uint8 NCHW) → softmax, weighted average) on N×S×S×3 uint8 images."""
    outs = []
    for m in members:
        module = m.module.cpu().eval()
        per = [module(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).contiguous())
               .float().softmax(dim=-1).numpy() for i in range(0, len(images), batch_size)]
        outs.append(np.concatenate(per))
    return average_probs(outs, [m.weight for m in members]) if len(outs) > 1 else outs[0]


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """N×S×S×3 uint8 → the graph's layout."""
    return np.ascontiguousarray(images if layout == "nhwc" else images.transpose(0, 3, 1, 2))


def write_onnx(model: ExportModel, example: torch.Tensor, path: Path, opset: int | None, metadata: dict) -> None:
    """torch.onnx (dynamo exporter, one self-contained file) with a dynamic batch axis and the metadata as metadata_props."""
    import onnx

    for name in ("onnx_ir", "onnxscript"):  # their INFO lines (one per folded initializer) drown the export's own log
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                      dynamic_shapes={"image": {0: batch}}, dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(path))
    metadata["opset"] = int(next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")))
    set_onnx_metadata(proto, metadata)
    onnx.save(proto, str(path))


def set_onnx_metadata(proto: Any, metadata: dict) -> None:
    """Each top-level metadata key as one metadata_props entry (JSON values), readable by any ONNX runtime/viewer."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def write_torchscript(model: ExportModel, example: torch.Tensor, path: Path, metadata: dict) -> None:
    """torch.jit.trace (batch size stays free for these networks) saved with the metadata as an extra file."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream (still supported; see README)
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


@dataclass
class ExportedModel:
    """An exported file loaded back for inference in Python (ONNX Runtime or TorchScript); the reference for callers."""

    path: str
    metadata: dict
    runner: Any

    @property
    def preprocess(self) -> Preprocess:
        """The Preprocess each decoded image must pass through first, rebuilt from the metadata."""
        return Preprocess.from_description(self.metadata["preprocess"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for preprocessed N×S×S×3 uint8 images (converted to the graph's layout here)."""
        x = to_layout(np.asarray(batch, dtype=np.uint8), self.metadata["input"]["layout"])
        if self.metadata["format"] == "onnx":
            return self.runner.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            return self.runner(torch.from_numpy(x)).numpy()

    def predict_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities for decoded RGB uint8 images of any size: Preprocess, then the graph."""
        prep = self.preprocess
        return self(np.stack([prep(img) for img in images]))


def load_exported(path: str | Path, threads: int | None = None) -> ExportedModel:
    """Open an exported .onnx (ONNX Runtime, CPU) or .pt (TorchScript) file with its metadata."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
        return ExportedModel(str(path), meta, sess)
    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return ExportedModel(str(path), json.loads(extra[METADATA_FILE]), module.eval())


def max_abs_diff(exported: ExportedModel, images: np.ndarray, reference: np.ndarray, batch_size: int) -> float:
    """max |Δprob| between the exported file and the PyTorch path, batch by batch (exercises the dynamic batch axis)."""
    got = np.concatenate([exported(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return float(np.abs(got.astype(np.float64) - reference).max())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file (recorded beside the export)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(ckpts: Any, fmt: str, out: str | Path, *, layout: str, parity_n: int, tolerance: float, batch_size: int,
           weights: Sequence[float] | None = None, opset: int | None = None, overwrite: bool = False) -> dict:
    """Export checkpoint(s) to `out`, check parity with the PyTorch path, write `<out>.json`; returns that record."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: use one of {sorted(FORMATS)}.")
    out = Path(out)
    record_path = out.with_name(out.name + ".json")
    if not overwrite and (out.exists() or record_path.exists()):
        raise ConfigError(f"{out} already exists; pass overwrite=true or another out=PATH.")
    members = load_members(ckpts, weights)
    prep = common_preprocess(members)
    metadata = export_metadata(members, prep, layout, fmt)
    model = ExportModel(members, layout).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images, where = parity_images(members, parity_n)
    example = torch.from_numpy(to_layout(images[: min(2, len(images))], layout))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        write_onnx(model, example, out, opset, metadata)
    else:
        write_torchscript(model, example, out, metadata)
    reference = reference_probs(members, images, batch_size)
    diff = max_abs_diff(load_exported(out), images, reference, batch_size)
    runtime = "onnxruntime" if fmt == "onnx" else "torch.jit"
    metadata["parity"] = {"max_abs_diff_prob": diff, "images": int(len(images)), "on": where, "runtime": runtime,
                          "tolerance": tolerance, "passed": bool(diff <= tolerance)}
    if fmt == "onnx":  # store the measured parity inside the file too
        import onnx

        proto = onnx.load(str(out))
        set_onnx_metadata(proto, metadata)
        onnx.save(proto, str(out))
    else:
        write_torchscript(model, example, out, metadata)
    record = {**metadata, "file": str(out.resolve()), "sha256": sha256(out), "bytes": out.stat().st_size}
    write_json(record, record_path)
    log.info("exported %s → %s (%s, %.1f MB); parity on %d images (%s) with %s: max |Δprob| = %.3g (tolerance %.0e)",
             ", ".join(m.path for m in members), out, fmt, out.stat().st_size / 1e6, len(images), where, runtime, diff, tolerance)
    print(f"parity: max |Δprob| = {diff:.3g} on {len(images)} images ({runtime}); wrote {out} and {record_path}")
    if diff > tolerance:
        raise BloodcellError(f"parity check failed: max |Δprob| = {diff:.3g} > {tolerance:g} (export kept at {out} for inspection).")
    return record


def default_out(ckpts: list[str], fmt: str, output_dir: str | Path) -> Path:
    """One checkpoint: beside it (`best-epoch012.onnx`); an ensemble: `<output_dir>/ensemble.onnx`."""
    if len(ckpts) == 1:
        return Path(ckpts[0]).expanduser().with_suffix(FORMATS[fmt])
    return Path(output_dir) / f"ensemble{FORMATS[fmt]}"


def run_export(cfg: Any) -> dict:
    """export.py's library entry: conf/export.yaml's keys → `export`."""
    ckpts = require_checkpoints(cfg.get("ckpt"))
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: use one of {sorted(FORMATS)}.")
    out = cfg.get("out") or default_out(ckpts, fmt, cfg.output_dir)
    weights = [float(w) for w in cfg.weights] if cfg.get("weights") else None
    return export(ckpts, fmt, out, layout=str(cfg.layout), parity_n=int(cfg.parity_images), tolerance=float(cfg.parity_tolerance),
                  batch_size=int(cfg.batch_size), weights=weights, opset=cfg.get("opset"), overwrite=bool(cfg.overwrite))
