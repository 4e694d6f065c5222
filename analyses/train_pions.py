"""Train the pretrained pion surrogate shipped in ``calinfer/models/pions`` (a layer-energy model).

Data: the full recipes of the embedded pion sets, remade from their recorded seeds:
``datasets.regenerate("pions-train", n=100000)`` (charged pions, ``calochallenge-ds1-pions``, E uniform in 5-100 GeV)
for training and ``regenerate("pions-val", n=10000)`` for validation / early stopping (the package stores only the
first showers of each). Only flow I (the 7 layer energies given E_inc: 4 autoregressive spline blocks, hidden 64,
40 minutes on one thread) is trained for real; flow II is a one-block, 4-wide placeholder trained for a single epoch
(``calinfer.training`` needs a finite flow-II validation loss to write a model), so the model is for
``likelihood="layers"`` only: its provenance says so (``"likelihood": "layers only"``) and it is marked
``layers_only`` (it refuses ``--likelihood full``). The flow-II Gaussianization table of the preprocessing (1 MB,
used by flow II only) is dropped from the saved model to keep the package small.

    python analyses/train_pions.py --threads 1 --work-dir runs/pions/train

``--prior log-uniform`` trains the same flow on ``pions-train-log`` (the prior study; default output then
``runs/pions/model-log``).
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
from calinfer.training import TrainConfig, plot_loss_curves, train_surrogate

LAYER_FLOW = {"kind": "autoregressive", "n_blocks": 4, "hidden": 64, "n_bins": 8}
PLACEHOLDER_VOXEL_FLOW = {"kind": "coupling", "n_blocks": 1, "hidden": 4, "n_bins": 2}
N_TRAIN, N_VAL = 100_000, 10_000


def make_layers_only(directory: Path) -> None:
    """Mark a trained model as a layer-likelihood model and drop its flow-II Gaussianization table."""
    model = ShowerSurrogate.load(directory)
    model.preprocessing.gaussianize = None
    model.layers_only = True
    model.provenance["likelihood"] = "layers only: flow II is a 1-block placeholder trained on one batch"
    model.save(directory)
    plot_loss_curves(model.training, Path(directory) / "loss_curves.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", choices=("uniform", "log-uniform"), default="uniform")
    parser.add_argument("--out", default=None, help="model directory (default: calinfer/models/pions for the "
                        "uniform prior, runs/pions/model-log for the log-uniform one)")
    parser.add_argument("--work-dir", default="runs/pions/train")
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-time budget of the training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=N_TRAIN)
    parser.add_argument("--hidden", type=int, default=LAYER_FLOW["hidden"], help="hidden width of flow I")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    name = "pions-train" if args.prior == "uniform" else "pions-train-log"
    default_out = (Path(__file__).resolve().parents[1] / "calinfer" / "models" / "pions" if args.prior == "uniform"
                   else Path("runs/pions/model-log"))
    out = Path(args.out) if args.out else default_out
    start = time.time()
    train = datasets.regenerate(name, n=args.n_train)
    val = datasets.regenerate("pions-val", n=N_VAL)
    logging.info("simulated %d + %d pions in %.0f s", len(train), len(val), time.time() - start)
    provenance = {
        "dataset": name,
        "dataset_n": len(train),
        "validation_dataset": "pions-val",
        "validation_n": len(val),
        "recipe": datasets.spec(name).to_dict(),
        "validation_recipe": datasets.spec("pions-val").to_dict(),
        "regenerate": f"calinfer.datasets.regenerate({name!r}, n={len(train)})",
        "script": "analyses/train_pions.py",
        "seed": args.seed,
        "likelihood": "layers only: flow II is a 1-block placeholder trained for 1 epoch",
    }
    config = TrainConfig(epochs=1, batch_size=256, lr=1e-3, patience=1, layer_epochs=400, layer_batch_size=1024,
                         layer_lr=2e-3, layer_patience=30, layer_time_fraction=1.0, max_minutes=args.minutes,
                         seed=args.seed, device="cpu", progress=not args.quiet)
    train_surrogate(train, out, config=config, val_showers=val, layer_flow={**LAYER_FLOW, "hidden": args.hidden},
                    voxel_flow=PLACEHOLDER_VOXEL_FLOW, work_dir=args.work_dir, resume=args.resume,
                    provenance=provenance)
    make_layers_only(out)
    logging.info("training finished in %.1f min; model in %s", (time.time() - start) / 60, out)

    reloaded = ShowerSurrogate.load(out, geometry="calochallenge-ds1-pions")
    for test_name in ("pions-test-10", "pions-test-50", "pions-test-90"):
        test = datasets.load(test_name)
        lpl = reloaded.log_prob_layers(test.layer_energies(), test.incident_energy, device="cpu")
        logging.info("%s: mean log p (layers) %.3f, finite %d/%d", test_name, np.mean(lpl), np.isfinite(lpl).sum(),
                     len(lpl))


if __name__ == "__main__":
    main()
