"""The local web page's library part: a FastAPI app around one checkpoint or an ensemble (serve.py runs it).

FastAPI + one static page rather than Gradio: three small pinned packages (fastapi, uvicorn, python-multipart) instead of
Gradio's large dependency tree and its own front-end release cycle; the page is one HTML file we control (layout, per-file
errors, CSV columns equal to predictions.csv), it works offline, and a browser test can address stable element ids.

Each uploaded file is decoded by the project's one decoder (`decode_file`, any format it takes), passed through the
checkpoint's own `Preprocess`, classified, and explained with Grad-CAM (`explain.py`); a file that cannot be read gets
an error entry and never stops the others.
"""

import base64
import io
import logging
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bloodcell.data.images import decode_file
from bloodcell.evaluation.explain import ensemble_probs_prepared, explain_prepared, overlay
from bloodcell.evaluation.inference import Member, common_preprocess

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("serve_page.html")
TOP_K = 3
THUMB_SIDE = 224


def png_data_url(img: np.ndarray) -> str:
    """RGB uint8 array → `data:image/png;base64,...` (shown inline by the page, nothing stored on disk)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(name: str, data: bytes) -> tuple[np.ndarray | None, str | None]:
    """Decode uploaded bytes with the project's one decoder (it judges the file by its suffix and content)."""
    suffix = Path(name).suffix[:16]
    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        img, why = decode_file(Path(f.name))
    return img, (why.replace(f.name, name) if why else None)  # name the user's file, not the temporary copy


@dataclass
class Service:
    """Members + settings; `predict` turns uploaded files into one result entry each (thread-safe)."""

    members: Sequence[Member]
    uncertain_below: float
    batch_size: int
    explain: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.prep = common_preprocess(self.members)
        self.classes = list(self.members[0].module.classes)

    def info(self) -> dict:
        """What the page shows about the model."""
        return {"classes": self.classes, "uncertain_below": self.uncertain_below, "explain": self.explain,
                "image_size": self.prep.image_size, "models": [Path(m.path).name for m in self.members],
                "backbones": [m.describe()["backbone"] for m in self.members]}

    def predict(self, files: Sequence[tuple[str, bytes]]) -> list[dict]:
        """One entry per file, in order: the prediction (class, top-3, uncertain flag, overlay) or the reason it failed."""
        results: list[dict] = [{"name": name} for name, _ in files]
        good, prepared = [], []
        for i, (name, data) in enumerate(files):
            img, why = decode_upload(name, data) if data else (None, "empty file (0 bytes)")
            if img is None:
                results[i]["error"] = why
                continue
            try:
                prepared.append(self.prep(img))
            except Exception as exc:  # a decodable image the preprocessing cannot take: this file fails, not the request
                results[i]["error"] = f"preprocessing failed: {type(exc).__name__}: {exc}"
                continue
            good.append(i)
        for start in range(0, len(good), self.batch_size):
            idx = good[start : start + self.batch_size]
            batch = np.stack(prepared[start : start + self.batch_size])
            with self.lock:
                probs, maps = explain_prepared(self.members, batch, self.batch_size) if self.explain else (self._probs(batch), None)
            for j, i in enumerate(idx):
                results[i].update(self.entry(batch[j], probs[j], None if maps is None else maps[j]))
        return results

    def _probs(self, batch: np.ndarray) -> np.ndarray:
        return ensemble_probs_prepared(self.members, batch, self.batch_size)

    def entry(self, img: np.ndarray, p: np.ndarray, cam: np.ndarray | None) -> dict:
        """The JSON the page renders for one image."""
        top = np.argsort(-p, kind="stable")[:TOP_K]
        big = np.asarray(Image.fromarray(img).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC))
        out = {"predicted": self.classes[top[0]], "probability": float(p[top[0]]),
               "top": [{"class": self.classes[k], "probability": float(p[k])} for k in top],
               "uncertain": bool(p[top[0]] < self.uncertain_below), "input": png_data_url(big)}
        if cam is not None:
            out["overlay"] = png_data_url(overlay(img, cam, min_side=THUMB_SIDE))
        return out


def create_app(service: Service, max_files: int):
    """The FastAPI app: GET / (the page), GET /api/info, POST /api/predict (multipart `files`), GET /healthz."""
    from fastapi import FastAPI, File, HTTPException, UploadFile
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="bloodcell", docs_url=None, redoc_url=None)
    page = PAGE.read_text()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/api/info")
    def info() -> dict:
        return service.info()

    @app.post("/api/predict")
    def predict(files: list[UploadFile] = File(...)) -> dict:  # noqa: B008  (FastAPI's declaration style)
        if len(files) > max_files:
            raise HTTPException(413, f"{len(files)} files in one request; at most {max_files} (the page sends smaller batches).")
        uploads = [(f.filename or "unnamed", f.file.read()) for f in files]
        results = service.predict(uploads)
        n_err = sum("error" in r for r in results)
        log.info("predicted %d file(s), %d error(s)", len(results) - n_err, n_err)
        return {"results": results}

    return app
