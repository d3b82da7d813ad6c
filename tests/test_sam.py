"""`sam.rho`: sharpness-aware minimisation around the configured optimiser (one step checked against a hand computation)."""
from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bloodcell.errors import ConfigError
from bloodcell.module import BloodCellModule
from bloodcell.optim import check_sam_fits_trainer, frozen_batchnorm_stats, sam_perturb, sam_restore
from bloodcell.training import train
from tests.conftest import FAST

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
LR, RHO = 0.1, 0.05
# plain SGD without momentum or decay, no schedule: one step is w ← w − LR·g, so the gradient used can be read off
PLAIN_SGD = {"optimizer": {"_target_": "timm.optim.create_optimizer_v2", "opt": "momentum", "momentum": 0.0, "lr": LR,
                           "weight_decay": 0.0}, "scheduler": {"name": "none"}}


def test_perturb_moves_by_rho_along_the_gradient_and_restore_undoes_it():
    a, b, frozen = (torch.nn.Parameter(torch.randn(5)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0, 0, 0, 0]), torch.tensor([0, 4.0, 0, 0, 0])  # global norm 5
    before = [p.detach().clone() for p in (a, b, frozen)]
    moves = sam_perturb([a, b, frozen], rho=0.5)
    assert torch.allclose(a - before[0], torch.tensor([0.3, 0, 0, 0, 0]))
    assert torch.allclose(b - before[1], torch.tensor([0, 0.4, 0, 0, 0]))
    assert torch.equal(frozen, before[2]) and len(moves) == 2  # no gradient (e.g. a frozen stage): not moved
    sam_restore(moves)
    assert all(torch.equal(p, q) for p, q in zip((a, b, frozen), before))  # exactly, not up to rounding


def test_frozen_batchnorm_stats_keeps_running_statistics_and_counter():
    bn = torch.nn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 5, 5))
    mean, var, count = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    with frozen_batchnorm_stats(bn):
        bn(torch.randn(4, 3, 5, 5) + 3)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var) and torch.equal(bn.num_batches_tracked, count)
    assert bn.momentum == 0.1
    bn(torch.randn(4, 3, 5, 5) + 3)
    assert not torch.equal(bn.running_mean, mean)  # outside the context the statistics move again


def one_step(model_cfg: dict, rho: float, x: torch.Tensor, y: torch.Tensor) -> BloodCellModule:
    torch.manual_seed(0)
    module = BloodCellModule(model=model_cfg, optim=PLAIN_SGD, classes=CLASSES, image_size=x.shape[-1], sam={"rho": rho})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=len(y)))
    return module


def hand_sam_step(net: torch.nn.Module, xf: torch.Tensor, y: torch.Tensor, rho: float) -> torch.nn.Module:
    """Foret et al.'s update written out: g at w; e = rho·g/‖g‖; g' at w + e (BatchNorm statistics from the first pass
    only); w ← w − LR·g'."""
    net = copy.deepcopy(net).train()
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(net(xf), y), params)
    if rho:
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        steps = [rho * g / norm for g in grads]
        buffers = {k: v.clone() for k, v in net.named_buffers()}
        with torch.no_grad():
            for p, e in zip(params, steps):
                p.add_(e)
        grads = torch.autograd.grad(F.cross_entropy(net(xf), y), params)
        with torch.no_grad():
            for p, e in zip(params, steps):
                p.sub_(e)
            for k, v in net.named_buffers():
                v.copy_(buffers[k])
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(LR * g)
    return net


@pytest.mark.parametrize("rho", [RHO, 0.0])
def test_one_training_step_is_the_sam_update(compose_cfg, rho):
    model_cfg = dict(compose_cfg(["model=small_cnn", "model.head.dropout=0.0"]).model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.arange(8)
    torch.manual_seed(0)
    start = BloodCellModule(model=model_cfg, optim=PLAIN_SGD, classes=CLASSES, image_size=32, sam={"rho": rho})
    expected = hand_sam_step(start.model, start.preprocess(x), y, rho)
    trained = one_step(model_cfg, rho, x, y)
    got, want = trained.model.state_dict(), expected.state_dict()
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=1e-6, rtol=1e-5), f"{k} differs from the hand-computed step"
    if rho:  # the check can fail: SAM's step differs from the plain one
        plain = hand_sam_step(start.model, start.preprocess(x), y, 0.0).state_dict()
        assert any(not torch.allclose(got[k].float(), plain[k].float(), atol=1e-6) for k in plain if "weight" in k)
    assert trained.hparams.sam == {"rho": rho}  # in the checkpoint's hyper-parameters


def test_sam_trains_from_the_real_config_and_refuses_what_would_break_it(compose_cfg, tmp_path):
    base = ["data=sample", "model=small_cnn", "test=false", "evaluate=false", "data.image_size=32", "~logger.tensorboard",
            "trainer.max_epochs=1", "sam.rho=0.05", *FAST]
    out = tmp_path / "run"
    train(compose_cfg([*base, f"paths.output_dir={out}"]))
    assert json.loads((out / "summary.json").read_text())  # a full run with SAM completes and writes its summary
    assert "with sharpness-aware minimisation (SAM, rho 0.05)" in (out / "checkpoints" / "model_card.md").read_text()
    with pytest.raises(ConfigError, match=r"sam.rho=0.05 with trainer.accumulate_grad_batches=2"):
        train(compose_cfg([*base, "trainer.accumulate_grad_batches=2", f"paths.output_dir={tmp_path / 'acc'}"]))
    with pytest.raises(ConfigError, match=r"sam.rho=-1.0 must be ≥ 0"):
        train(compose_cfg([*base, "sam.rho=-1", f"paths.output_dir={tmp_path / 'neg'}"]))
    with pytest.raises(ConfigError, match=r"trainer.precision=16-mixed: fp16 loss scaling .*bf16-mixed"):
        check_sam_fits_trainer(0.05, SimpleNamespace(precision="16-mixed", accumulate_grad_batches=1))
