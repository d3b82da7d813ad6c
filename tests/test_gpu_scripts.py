"""The helpers that carry weights to the GPU machine and checkpoints back (scripts/gpu/, issue 13)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slim_state_dict_keeps_order_drops_the_classifier_and_halves_floats():
    slim = _script("slim_weights").slim_state_dict
    state = {"_conv_stem.weight": torch.randn(4, 3, 3, 3), "_bn0.num_batches_tracked": torch.tensor(7),
             "_fc.weight": torch.randn(10, 4), "_fc.bias": torch.randn(10)}
    out = slim(state)
    assert list(out) == ["_conv_stem.weight", "_bn0.num_batches_tracked"]  # the loader maps by position
    assert out["_conv_stem.weight"].dtype == torch.float16 and out["_bn0.num_batches_tracked"].dtype == torch.int64
    torch.testing.assert_close(out["_conv_stem.weight"].float(), state["_conv_stem.weight"], atol=2e-3, rtol=1e-3)


def test_packed_checkpoint_parts_reassemble_to_what_evaluation_needs(tmp_path):
    pack = _script("pack_checkpoint").pack
    ckpt = {"epoch": 3, "state_dict": {"w": torch.randn(300, 300)}, "hyper_parameters": {"image_size": 96},
            "bloodcell": {"format": 1}, "optimizer_states": [{"m": torch.randn(300, 300)}], "current_model_state": {}}
    torch.save(ckpt, tmp_path / "full.ckpt")
    parts = pack(tmp_path / "full.ckpt", tmp_path / "run.ckpt", part_bytes=100_000)
    assert len(parts) > 1 and all(p.stat().st_size <= 100_000 for p in parts)
    (tmp_path / "whole.ckpt").write_bytes(b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: int(p.suffix[5:]))))
    back = torch.load(tmp_path / "whole.ckpt", weights_only=True)
    assert set(back) == {"epoch", "state_dict", "hyper_parameters", "bloodcell"}  # no optimizer state, no raw weights
    torch.testing.assert_close(back["state_dict"]["w"], ckpt["state_dict"]["w"])


def test_also_last_packs_the_runs_last_checkpoint_beside_the_kept_one(tmp_path):
    """PACK_LAST=1 (window.sh → --also-last): the run's last.ckpt comes back as NAME_last.ckpt.part*, not the kept one again."""
    script = _script("pack_checkpoint")
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    for name, epoch in (("best-epoch014.ckpt", 14), ("last.ckpt", 29)):
        torch.save({"epoch": epoch, "state_dict": {"w": torch.full((4,), float(epoch))}, "hyper_parameters": {}}, ckpts / name)
    out = tmp_path / "out" / "lite0.ckpt"
    out.parent.mkdir()
    assert script.last_name(out) == tmp_path / "out" / "lite0_last.ckpt"
    script.pack(script.last_beside(ckpts / "best-epoch014.ckpt"), script.last_name(out))
    back = torch.load(tmp_path / "out" / "lite0_last.ckpt.part0", weights_only=True)
    assert back["epoch"] == 29 and back["state_dict"]["w"][0] == 29
    (ckpts / "last.ckpt").unlink()
    with pytest.raises(SystemExit, match="last.ckpt"):
        script.last_beside(ckpts / "best-epoch014.ckpt")
    assert '[ "${PACK_LAST:-0}" = 1 ] && ALSO_LAST=(--also-last)' in (ROOT / "scripts" / "gpu" / "window.sh").read_text()
