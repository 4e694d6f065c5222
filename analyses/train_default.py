"""Retrain the pretrained default surrogate shipped in ``calinfer/models/default`` from scratch.

Data: the embedded photon sets ``photons-train`` (50k showers, CaloGAN geometry, E uniform in
1-100 GeV) for training and ``photons-val`` (10k) for validation/early stopping. The
architecture is flow I: 4 autoregressive spline blocks, hidden 32 (the package default); flow II:
8 coupling spline blocks, hidden 96 (narrower than the package default 128, for the CPU budget).
It trains in float32 on one CPU thread within a wall-time budget (about 55 minutes). Checkpoints go
to ``--work-dir`` after every epoch; rerun with ``--resume`` after an interruption. The model
directory is replaced as a whole at the end.

    python analyses/train_default.py --minutes 55 --threads 1 --work-dir /work/runs/default
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import datasets
from calinfer.surrogate import ShowerSurrogate
from calinfer.training import TrainConfig, train_surrogate

VOXEL_FLOW = {"kind": "coupling", "n_blocks": 8, "hidden": 96, "n_bins": 8}
LAYER_FLOW = {"kind": "autoregressive", "n_blocks": 4, "hidden": 32, "n_bins": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "calinfer" / "models" / "default"))
    parser.add_argument("--work-dir", default="runs/default")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-time budget of the training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    train = datasets.load("photons-train")
    val = datasets.load("photons-val")
    provenance = {
        "dataset": "photons-train",
        "validation_dataset": "photons-val",
        "metadata": datasets.describe("photons-train"),
        "validation_metadata": datasets.describe("photons-val"),
        "script": "analyses/train_default.py",
        "seed": args.seed,
    }
    config = TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, patience=6, layer_epochs=300,
                         layer_batch_size=1024, layer_lr=2e-3, layer_patience=30, layer_time_fraction=0.15,
                         max_minutes=args.minutes, seed=args.seed, device=args.device, progress=not args.quiet)
    start = time.time()
    train_surrogate(train, args.out, config=config, val_showers=val, layer_flow=LAYER_FLOW, voxel_flow=VOXEL_FLOW,
                    work_dir=args.work_dir, resume=args.resume, provenance=provenance)
    logging.info("training finished in %.1f min; model in %s", (time.time() - start) / 60, args.out)

    reloaded = ShowerSurrogate.load(args.out, geometry="calogan")
    for name in ("photons-test-10", "photons-test-50", "photons-test-90"):
        test = datasets.load(name)
        lp = reloaded.log_prob(test, test.incident_energy, device="cpu")
        lpl = reloaded.log_prob_layers(test.layer_energies(), test.incident_energy, device="cpu")
        logging.info("%s: mean log p full %.2f (finite %d/%d), layers %.3f", name, np.mean(lp),
                     np.isfinite(lp).sum(), len(lp), np.mean(lpl))


if __name__ == "__main__":
    main()
