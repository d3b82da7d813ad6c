"""model_card.md beside a run's checkpoints: what the model was trained on, how, and how it did (train.py writes it).

Everything in the card is read from the run itself: the composed config, the data module (source, split, counts),
the module's preprocessing, summary.json's numbers, eval/metrics.json (clean test, Bmk/corruptions where a
benchmark was run, Grad-CAM cell share where explained) and `summary["crosslab"]` where the cross-lab sets were
evaluated. A section whose numbers were not measured says so and names the command that measures them.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from bloodcell.augment.gpu import batch_op_list
from bloodcell.config import to_plain
from bloodcell.evaluation.report import interval_text

CARD_NAME = "model_card.md"


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def weights_source(model: dict) -> str:
    """Where the backbone's initial weights came from, in words."""
    if model.get("weights"):
        return f"local weights file `{model['weights']}`"
    if model.get("weights_source"):
        return f"offline source `{model['weights_source']}` (bloodcell/models/weights.py)"
    if model.get("pretrained"):
        return "ImageNet weights from the timm / Hugging Face hub"
    return "random initialisation (trained from scratch)"


def init_weights(model: dict, summary: dict) -> str:
    """The run's starting weights: a trained checkpoint (`init_from`) or the backbone's source."""
    if summary.get("init_from"):
        return f"the trained checkpoint `{summary['init_from']}` (init_from; backbone and head)"
    return weights_source(model)


def augment_summary(cfg: Any) -> list[str]:
    """One line per augmentation setting: the op list, batch ops, mixing, balancing."""
    aug = to_plain(cfg.get("augment")) or {}
    ops = [str(op.get("_target_", "?")).rsplit(".", 1)[-1] for op in aug.get("train") or [] if isinstance(op, dict)]
    lines = [f"- per-sample (`augment={aug.get('name', '?')}`): {', '.join(ops) or 'none'}"]
    batch_ops = batch_op_list(cfg.get("batch_augment"))
    if batch_ops:
        lines.append(f"- on-device batch ops: {', '.join(str(o.get('_target_', '?')).rsplit('.', 1)[-1] for o in batch_ops)}")
    mix = to_plain(cfg.get("mix")) or {}
    if mix.get("enabled"):
        lines.append(f"- CutMix/MixUp: mixup α {mix.get('mixup_alpha')}, cutmix α {mix.get('cutmix_alpha')}, prob {mix.get('prob')}")
    if (aug.get("jsd") or {}).get("enabled"):
        lines.append("- AugMix JSD consistency loss")
    data = to_plain(cfg.get("data")) or {}
    lines.append(f"- class balance: `{data.get('balance', 'none')}`; label smoothing {(cfg.get('loss') or {}).get('label_smoothing', 0)}")
    return lines


def counts_rows(dm: Any) -> list[str]:
    """Markdown table of images per class and split."""
    splits = [s for s in ("train", "val", "test") if s in dm.splits]
    rows = ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for i, c in enumerate(dm.classes):
        rows.append(f"| {c} | " + " | ".join(str(int(dm.class_counts(s)[i])) for s in splits) + " |")
    rows.append("| **total** | " + " | ".join(str(len(dm.splits[s])) for s in splits) + " |")
    return rows


def results_lines(summary: dict, evaluation: dict | None) -> list[str]:
    """Clean, Bmk/corruption, cross-lab and heat-map numbers where measured; how to measure the rest."""
    m = summary.get("metrics") or {}
    lines = ["| set | accuracy | balanced accuracy | macro F1 |", "|---|---|---|---|"]
    for stage in ("val", "test"):
        if f"{stage}/acc" in m:
            acc, bal, f1 = (_f(m.get(f"{stage}/{k}")) for k in ("acc", "bal_acc", "f1"))
            lines.append(f"| {stage} split (Lightning) | {acc} | {bal} | {f1} |")
    if evaluation:
        lines.append(f"| {evaluation.get('split', 'test')} split (evaluate, best checkpoint) | {_f(evaluation.get('accuracy'))} | "
                     f"{_f(evaluation.get('balanced_accuracy'))} | {_f(evaluation.get('macro_f1'))} |")
    crosslab = summary.get("crosslab") or {}
    for name, c in crosslab.items():
        lines.append(f"| cross-lab `{name}` (n={c.get('n')}, {len(c.get('classes_present') or [])} classes; recall = macro recall) | "
                     f"{_f(c.get('accuracy'))}{interval_text(c, 'accuracy')} | "
                     f"{_f(c.get('macro_recall'))}{interval_text(c, 'macro_recall')} | {_f(c.get('macro_f1'))} |")
    lines.append("")
    if evaluation and evaluation.get("ece") is not None:
        lines.append(f"Calibration on the test split: ECE {_f(evaluation['ece'])}, NLL {_f(evaluation.get('nll'))}.")
    robust = (evaluation or {}).get("robustness")
    if robust:
        lines.append(f"Robustness: Bmk accuracy {_f(robust.get('bmk_acc'))}, mean accuracy over the corruption suite "
                     f"{_f(robust.get('mean_corruption_acc'))}.")
    else:
        lines.append("Bmk and corruption accuracy: not evaluated in this run "
                     "(`python evaluate.py ckpt=<this checkpoint> benchmark_dir=<folder from bloodcell.tools.benchmark_sets>`).")
    if not crosslab:
        lines.append("Cross-lab accuracy: not evaluated in this run (another lab's images, e.g. "
                     "`python evaluate.py ckpt=<this checkpoint> data=folder data.root=<other lab>`).")
    explain = (evaluation or {}).get("explain")
    if explain:
        sets = explain["sets"].items()
        shares = ", ".join(f"{k} {_f(v.get('cam_cell_share'))} (cell area {_f(v.get('cell_area_share'))})" for k, v in sets)
        lines.append(f"Grad-CAM heat-map mass on the white cell: {shares}.")
    return lines


def model_card(cfg: Any, dm: Any, module: Any, summary: dict, evaluation: dict | None = None) -> str:
    """The card's markdown text."""
    model = to_plain(module.hparams.model) or {}
    data = to_plain(cfg.get("data")) or {}
    optim = (to_plain(cfg.get("optim")) or {}).get("optimizer") or {}
    trainer = to_plain(cfg.get("trainer")) or {}
    prep = module.preprocessing.describe()
    n_params = sum(p.numel() for p in module.model.parameters())
    backbone = model.get("backbone", model.get("_target_", "?"))
    source = dm.source.describe()
    head = model.get("head") or {}
    best = summary.get("best_checkpoint") or "–"
    lines = [
        f"# Model card: {backbone} blood-cell classifier",
        "",
        f"Written by train.py on {dt.datetime.now().isoformat(timespec='seconds')} · best checkpoint `{best}`.",
        "",
        "## Model",
        f"- backbone `{backbone}` (timm) + dense head {head.get('hidden', [])} (dropout {head.get('dropout')}), "
        f"{n_params / 1e6:.2f} M parameters; {len(module.classes)} classes: {', '.join(module.classes)}",
        f"- initial weights: {init_weights(model, summary)}"
        + (f"; staged fine-tuning (head only for {model.get('freeze_epochs')} epochs, then {model.get('unfreeze_stages')} stages)"
           if model.get("freeze") else ""),
        f"- input: {prep['image_size']}×{prep['image_size']} RGB, normalised with the backbone's mean {list(module.model.mean)} "
        f"and std {list(module.model.std)}" + ("; EMA weights" if (model.get("ema") or {}).get("enabled") else ""),
        "",
        "## Data",
        f"- source: `{json.dumps(source)}`",
        f"- split: {'the source’s own' if source.get('type') == 'bloodmnist' else 'stratified, seeded'} "
        f"(val {data.get('val_fraction')}, test {data.get('test_fraction')}, split seed {data.get('split_seed')}); "
        f"exact duplicates removed: {data.get('dedup')}",
        "",
        *counts_rows(dm),
        "",
        "## Preprocessing (stored in the checkpoint, applied the same way by evaluate, predict, export and serve)",
        f"- resize `{prep['resize_mode']}` to {prep['image_size']} px; magnification `scale={prep['scale']}`; colour `{prep['colour']}`",
        f"- full settings: `{json.dumps(prep)}`",
        "",
        "## Augmentation (training only)",
        *augment_summary(cfg),
        "",
        "## Training budget",
        f"- {summary.get('epochs')} epoch(s) of max {trainer.get('max_epochs')}, {summary.get('train_images')} training images, "
        f"batch {data.get('batch_size')}; {_f(summary.get('fit_seconds'), 1)} s fitting "
        f"({_f(summary.get('seconds_per_epoch'), 1)} s/epoch)",
        f"- optimizer {optim.get('opt')} lr {optim.get('lr')} weight decay {optim.get('weight_decay')}"
        + (f" with sharpness-aware minimisation (SAM, rho {module.sam_rho})" if module.sam_rho else "") + "; "
        f"precision {trainer.get('precision')}, "
        f"accelerator {trainer.get('accelerator')} × {trainer.get('devices')}; seed {cfg.get('seed')}"
        + ("; fast_dev_run (a smoke test, not a trained model)" if trainer.get("fast_dev_run") else ""),
        *([f"- distilled from the teacher `{module.distill.teacher}` (knowledge distillation on each augmented batch, "
           f"weight {module.distill.weight}, temperature {module.distill.temperature}); the teacher is not part of this model"]
          if module.distill.teacher else []),
        *([f"- consistency between each image and its batch-augmented copy (Jensen-Shannon, weight {module.consistency.weight}; "
           "both views trained on)"] if module.consistency.weight else []),
        "",
        "## Results",
        *results_lines(summary, evaluation),
        "",
        "## Intended use and limits",
        "- For research and teaching: sorting single-cell crops of May-Grünwald-Giemsa / Wright-stained peripheral blood "
        "smears (one cell centred, as in the training images) into the classes above, and as a second reader whose every answer "
        "a person checks. It is not a medical device and was not validated for diagnosis.",
        f"- It saw one source ({source.get('type')}: `{source.get('root') or source.get('path') or '?'}`). Other microscopes, stains, "
        "scanners and magnifications lower its accuracy (see the cross-lab and corruption rows; unmeasured means unknown).",
        "- It always answers with one of its classes: blasts, smudge cells, artefacts or any other cell type get a wrong label. "
        "Low top-1 probability (the web page's \"uncertain\" flag) marks answers to review first; calibration is in the ECE above.",
        "- Heat-maps (`python evaluate.py ckpt=... explain=gradcam`) show whether it looks at the cell or at the background.",
        "",
        "## Use",
        "```bash",
        "python evaluate.py ckpt=<checkpoint> predict_dir=<folder> [explain=true]   # CSV of predictions (+ heat-map overlays)",
        "python export.py ckpt=<checkpoint> format=onnx                              # portable model + parity check",
        "python serve.py ckpt=<checkpoint>                                            # local web page",
        "```",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(cfg: Any, dm: Any, module: Any, summary: dict, output_dir: str | Path) -> Path:
    """Write `<run>/checkpoints/model_card.md` (read eval/metrics.json when the run evaluated)."""
    evaluation = None
    if summary.get("evaluation") and Path(summary["evaluation"]).is_file():
        evaluation = json.loads(Path(summary["evaluation"]).read_text())
    path = Path(output_dir) / "checkpoints" / CARD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(cfg, dm, module, summary, evaluation))
    return path
