"""Decoding any common image file to RGB uint8 and resizing it the one way the project resizes."""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm"}
RESIZE_MODES = ("center_crop", "squash", "pad")

# Never decode a partial file into a half-grey image: truncated files must be reported.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Damaged TIFF metadata makes PIL warn once per file (file:line noise in long runs); the file then
# either decodes or raises, and errors are reported by path, so these warnings add nothing.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


class ImageReadError(Exception):
    """A file could not be decoded as an image; the message says why."""


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """RGB uint8 from any PIL mode: palette, grayscale, RGBA (on white), 16-bit and float TIFFs."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        arr = np.repeat(arr.round().astype(np.uint8)[..., None], 3, axis=2)
        return arr
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return arr


def explain_decode_error(exc: Exception) -> str:
    """PIL's reason, prefixed with what it means for the user (truncated copy, not an image, ...)."""
    reason = f"{type(exc).__name__}: {exc}"
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError):
        return f"truncated or incomplete file, re-copy it ({reason})"
    if "cannot identify image file" in text:
        return f"not a readable image: content matches no image format ({reason})"
    return f"corrupt or unsupported image data ({reason})"


def read_image(path: str | Path) -> np.ndarray:
    """Decode a file into an H×W×3 uint8 array, or raise ImageReadError with the reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                arr = _to_rgb_uint8(img)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ImageReadError(explain_decode_error(exc)) from None
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f"decoded to an unusable shape {arr.shape}")
    return np.ascontiguousarray(arr)


def decode_file(path: Path) -> tuple[np.ndarray | None, str | None]:
    """(pixels, None) or (None, why): the one way a listed file is decoded, so no caller crashes on a bad file."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, f"not an image file (suffix {path.suffix or 'none'!r}); readable suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}"
    try:
        return read_image(path), None
    except ImageReadError as exc:
        return None, str(exc)
    except OSError as exc:  # vanished or unreadable (permissions) between listing and reading
        return None, f"{type(exc).__name__}: {exc}"


def visible_files(root: Path) -> list[Path]:
    """Every file under `root`, recursively and sorted, skipping hidden files and folders (.DS_Store, .git, ...)."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts))


def pixel_hash(arr: np.ndarray) -> str:
    """Content hash of decoded pixels (shape included): equal images hash equal across formats/files."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


DOWNSAMPLE_FILTERS = {"box": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}


def resize_image(arr: np.ndarray, size: int, mode: str = "center_crop", downsample: str = "box") -> np.ndarray:
    """Square size×size RGB uint8: centre crop to square (as MedMNIST), squash, or pad with edge colour.

    Shrinking uses `downsample`: BOX (area average; the default every cache was built with) or BICUBIC (PIL's
    antialiased cubic kernel, wider than the box: less aliasing at non-integer factors); enlarging is always bicubic."""
    h, w = arr.shape[:2]
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    if downsample not in DOWNSAMPLE_FILTERS:
        raise ValueError(f"downsample filter {downsample!r} is not one of {tuple(DOWNSAMPLE_FILTERS)}")
    if mode == "center_crop" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top : top + s, left : left + s]
    elif mode == "pad" and h != w:
        s = max(h, w)
        top, left = (s - h) // 2, (s - w) // 2
        arr = np.pad(arr, ((top, s - h - top), (left, s - w - left), (0, 0)), mode="edge")
    if arr.shape[0] == size and arr.shape[1] == size:
        return np.ascontiguousarray(arr)
    img = Image.fromarray(arr)
    resample = DOWNSAMPLE_FILTERS[downsample] if arr.shape[0] >= size else Image.Resampling.BICUBIC
    return np.asarray(img.resize((size, size), resample=resample), dtype=np.uint8)


REENCODE_FORMATS = ("none", "webp", "jpeg")


def reencode(arr: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """Encode to `fmt` at `quality` in memory and decode again (PIL, as `scripts/resized_copy.py` writes its copies).

    Lossy compression at the model's size removes the finest detail (sensor noise, a scanner's sharpening, the
    source's own compression) the same way for every image, whichever camera or archive it came from."""
    if fmt == "none":
        return arr
    if fmt not in REENCODE_FORMATS:
        raise ValueError(f"re-encoding format {fmt!r} is not one of {REENCODE_FORMATS}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "WEBP" if fmt == "webp" else "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
