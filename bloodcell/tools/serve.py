"""The local web page: python serve.py ckpt=PATH [port=8000] → drop images, read class, top-3, heat-map; download a CSV."""
from __future__ import annotations

import socket

from omegaconf import DictConfig

from bloodcell.tools.cli import hydra_tool


def free_port(host: str) -> int:
    """A port the OS reports free on `host` (port=0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@hydra_tool("serve")
def main(cfg: DictConfig) -> None:
    """Load the checkpoint(s) once, then serve the page and its API with uvicorn until interrupted."""
    import uvicorn

    from bloodcell.errors import ConfigError
    from bloodcell.evaluation.inference import load_members, require_checkpoints, resolve_device
    from bloodcell.evaluation.serve_app import Service, create_app

    if not 0.0 <= float(cfg.uncertain_below) <= 1.0:
        raise ConfigError(f"uncertain_below={cfg.uncertain_below}: give a probability between 0 and 1.")
    weights = [float(w) for w in cfg.weights] if cfg.get("weights") else None
    members = load_members(require_checkpoints(cfg.get("ckpt")), weights)
    device = resolve_device(cfg.device)
    for m in members:
        m.module.to(device).eval()
    service = Service(members, float(cfg.uncertain_below), int(cfg.batch_size), explain=bool(cfg.explain))
    host = str(cfg.host)
    port = int(cfg.port) or free_port(host)
    print(f"serving {len(members)} model(s) on http://{host}:{port}/  (Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(service, int(cfg.max_files)), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
