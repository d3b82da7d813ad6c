"""CPU inference img/s: the exported ONNX model in ONNX Runtime vs evaluate.py's PyTorch path, same images, one run.

    python benchmarks/onnx_throughput.py --ckpt outputs/train/<run>/checkpoints/best-epoch012.ckpt [--split test --repeats 3]

"evaluate path" = bloodcell.evaluation.inference.ensemble_predict with one member on the checkpoint's cached split
(DataLoader over the memory map, module(uint8) → softmax → numpy, id alignment), exactly what evaluate.py runs.
"bare PyTorch loop" = the same module on the same array without the data path (context).
"onnxruntime" = the file export.py writes (exported here into a temporary folder unless --onnx is given), fed the same
cached split in batches of the same size (memory map → NHWC uint8 → session.run). Both use --threads intra-op threads.
Runs alternate; best of --repeats each; wall-clock and CPU-seconds of this process (on a shared machine the CPU figure
is the steadier one). Also prints max |Δprob| between the two over the whole split. --json writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bloodcell.evaluation.export import export, load_exported  # noqa: E402
from bloodcell.evaluation.inference import InferenceSettings, datamodule_for, ensemble_predict, load_members  # noqa: E402


def run_onnx(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model(np.asarray(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


@torch.inference_mode()
def run_plain(module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """A bare PyTorch loop on the same array (no DataLoader): separates the runtime from the data path."""
    module = module.cpu().eval()
    return np.concatenate([module(torch.from_numpy(np.array(images[i : i + batch_size])).permute(0, 3, 1, 2).contiguous())
                           .softmax(-1).numpy() for i in range(0, len(images), batch_size)])


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--onnx", help="an existing export of --ckpt (default: export into a temporary folder)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    load = round(os.getloadavg()[0], 2)  # other jobs on the machine (a shared 2-core machine reads high here)
    members = load_members(args.ckpt)
    module = members[0].module
    overrides = {"eval_batch_size": args.batch_size, "eval_num_workers": 0}
    dm, _ = datamodule_for(module, None, overrides)
    images = dm.splits[args.split].images()  # the same memory-mapped, preprocessed uint8 images the evaluate path reads
    n = len(images)
    tmp = tempfile.TemporaryDirectory()
    path = args.onnx or str(Path(tmp.name) / "model.onnx")
    if not args.onnx:
        export(args.ckpt, "onnx", path, layout="nhwc", parity_n=256, tolerance=1e-4, batch_size=64)
    model = load_exported(path, threads=args.threads)
    how = InferenceSettings(torch.device("cpu"), loader_overrides=overrides, progress=False)

    ref = ensemble_predict(members, None, args.split, how).probs  # warm-up of both, and the parity over the whole split
    got = run_onnx(model, images, args.batch_size)
    diff = float(np.abs(got - ref).max())
    paths = {"pytorch_evaluate_path": lambda: ensemble_predict(members, None, args.split, how),
             "pytorch_plain_loop": lambda: run_plain(module, images, args.batch_size),
             "onnxruntime": lambda: run_onnx(model, images, args.batch_size)}
    best = {k: (float("inf"), float("inf")) for k in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            _, wall, cpu = timed(fn)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    res = {
        "checkpoint": str(Path(args.ckpt).resolve()), "backbone": members[0].describe()["backbone"],
        "image_size": int(module.hparams.image_size),
        "split": args.split, "images": n, "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "cpu": os.cpu_count(), "load_average_1min_at_start": load,
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "max_abs_diff_prob_whole_split": diff,
        **{f"{k}_img_per_s": n / v[0] for k, v in best.items()},
        **{f"{k}_img_per_cpu_s": n / v[1] for k, v in best.items()},
    }
    res["speedup_wall"] = res["onnxruntime_img_per_s"] / res["pytorch_evaluate_path_img_per_s"]
    res["speedup_cpu"] = res["onnxruntime_img_per_cpu_s"] / res["pytorch_evaluate_path_img_per_cpu_s"]
    print(f"{res['backbone']} at {res['image_size']} px, {n} images of the {args.split} split, batch {args.batch_size}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    for label, k in (("evaluate.py PyTorch path", "pytorch_evaluate_path"), ("bare PyTorch loop", "pytorch_plain_loop"),
                     ("ONNX Runtime", "onnxruntime")):
        print(f"{label + ':':26s}{res[k + '_img_per_s']:.1f} img/s ({res[k + '_img_per_cpu_s']:.1f} img/CPU-s)")
    print(f"speed-up ONNX Runtime / PyTorch: {res['speedup_wall']:.2f}× wall, {res['speedup_cpu']:.2f}× CPU; "
          f"max |Δprob| over the split = {diff:.3g}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    main()
