"""Ablation of flow II (voxel shapes) at a fixed training budget: what each change buys in classifier AUC.

Each variant trains a fresh surrogate on the same freshly simulated photons (CaloGAN, 1-100 GeV uniform,
seeds 50000 + k of the built-in simulator, 20k showers per seed) with the same flow I recipe (epoch-limited,
so flow I is identical across variants) and a fixed number of flow-II epochs, then samples at the energies of
independent simulated photons (seed ``--eval-seed``) and runs the classifier test on the high-level
features and on the voxels (:func:`calinfer.evaluation.classifier_test`). One line per variant goes to
``<out>/ablation.jsonl`` (AUCs with their spread over 3 classifier runs, validation NLL, training seconds).

    python analyses/flow2_ablation.py --variant baseline --variant gaussianize --n-train 100000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from train_default import simulated_training_set  # the same cached training photons (analyses/ is on sys.path)

from calinfer import datasets
from calinfer.evaluation import classifier_test
from calinfer.simulation import simulate_showers
from calinfer.training import TrainConfig, train_surrogate

VARIANTS: dict[str, dict] = {
    "baseline": {"gaussianize": False, "voxel_flow": {"kind": "coupling", "n_blocks": 8, "hidden": 128}},
    "gaussianize": {"gaussianize": True, "voxel_flow": {"kind": "coupling", "n_blocks": 8, "hidden": 128}},
    "gaussianize-wide": {"gaussianize": True, "voxel_flow": {"kind": "coupling", "n_blocks": 8, "hidden": 256}},
    "gaussianize-deep": {"gaussianize": True, "voxel_flow": {"kind": "coupling", "n_blocks": 12, "hidden": 128}},
}
LAYER_FLOW = {"kind": "autoregressive", "n_blocks": 4, "hidden": 32, "n_bins": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2, help="flow-II epochs")
    parser.add_argument("--layer-epochs", type=int, default=40)
    parser.add_argument("--n-eval", type=int, default=4000)
    parser.add_argument("--eval-seed", type=int, default=777_001)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-cache", default="runs/simdata")
    parser.add_argument("--out", default="runs/flow2_ablation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = simulated_training_set(args.n_train, Path(args.data_cache))
    val = datasets.load("photons-val")
    reference = simulate_showers(args.n_eval, energy_range=(1.0, 100.0), seed=args.eval_seed)
    for name in args.variant:
        spec = VARIANTS[name]
        cfg = TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, patience=100, layer_epochs=args.layer_epochs,
                          layer_batch_size=1024, layer_lr=2e-3, layer_patience=100, seed=0, device="cpu",
                          progress=False)
        t0 = time.time()
        model = train_surrogate(train, out / name, config=cfg, val_showers=val, layer_flow=LAYER_FLOW,
                                voxel_flow=spec["voxel_flow"], gaussianize=spec["gaussianize"],
                                work_dir=out / f"{name}.work", resume=True)
        seconds = time.time() - t0
        generated = model.sample(reference.incident_energy, seed=1)
        res = {k: classifier_test(reference, generated, inputs=k, n_runs=3, n_threads=args.threads, seed=3)
               for k in ("features", "voxels")}
        row = {"variant": name, **spec, "n_train": args.n_train, "epochs": args.epochs,
               "val_nll_voxels": model.training["voxels"]["best_val_nll"], "train_seconds": round(seconds),
               **{f"auc_{k}": [round(r.mean, 4), round(r.std, 4)] for k, r in res.items()}}
        print(json.dumps(row), flush=True)
        with open(out / "ablation.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
