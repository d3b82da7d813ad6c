"""A resized (and optionally re-encoded) copy of an image folder, to train from (issue 12's training-copy rows).

The 96 px copy the GPU machine uses (`../shared/device/pbc96.zip`) is exactly PIL `resize((96, 96), BICUBIC)` of each
pbc128 image saved as WebP quality 85, and the baseline trained from it scores ~10 points higher on zheng2 than trained
from pbc128 through the project's cache (BOX resize, no compression). This makes the copies that separate the two:
    python scripts/resized_copy.py ../shared/data/pbc128 OUT/bicubic --resample bicubic             # PNG, lossless
    python scripts/resized_copy.py ../shared/data/pbc128 OUT/box_webp --resample box --webp 85
    python scripts/resized_copy.py ../shared/data/pbc128 OUT/pbc96 --resample bicubic --webp 85      # = pbc96.zip
then `python train.py ... data.root=OUT/<copy>` and evaluate on pbc128 (`data=pbc128 split=test`): same file stems,
so the same seeded split. Class folders and file stems are kept; the source is only read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from bloodcell.data.sources import FolderSource  # noqa: E402
from bloodcell.errors import DataError  # noqa: E402

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "box": Image.Resampling.BOX, "lanczos": Image.Resampling.LANCZOS,
            "bilinear": Image.Resampling.BILINEAR}


def copy_image(src: Path, dst_dir: Path, size: int, resample: str, webp: int | None) -> Path:
    image = Image.open(src).convert("RGB").resize((size, size), RESAMPLE[resample])
    dst = dst_dir / (src.stem + (".webp" if webp else ".png"))
    image.save(dst, "WEBP", quality=webp) if webp else image.save(dst, "PNG")
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--resample", choices=sorted(RESAMPLE), default="bicubic")
    parser.add_argument("--webp", type=int, default=None, metavar="QUALITY", help="save as WebP at this quality (else PNG)")
    args = parser.parse_args(argv)
    if args.dst.resolve() == args.src.resolve() or args.src.resolve() in args.dst.resolve().parents:
        parser.error(f"dst {args.dst} must lie outside src {args.src} (the source is only read)")
    try:
        files = FolderSource(str(args.src)).list_files()  # exactly what training from src would read
    except DataError as exc:
        parser.error(str(exc))
    if not files:
        parser.error(f"{args.src}: no images in class sub-folders")
    for path, class_dir in tqdm(files, desc=f"copy {args.resample}{f' webp{args.webp}' if args.webp else ''}", unit="img"):
        out_dir = args.dst / class_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        copy_image(path, out_dir, args.size, args.resample, args.webp)
    print(f"{len(files)} images → {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
