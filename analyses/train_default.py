"""Retrain the pretrained default surrogate shipped in ``calinfer/models/default`` from scratch.

Data (``--data``): the embedded ``photons-train`` (50k photons, CaloGAN geometry, E uniform in 1-100 GeV;
the default) or ``simulated``: ``--n-train`` freshly simulated photons (chunks of 20k with seeds 50000 + k,
cached as ``.npz`` in ``--data-cache`` so that a resumed run sees the same showers). Validation and early
stopping use the embedded ``photons-val`` (10k, seed 1002). Architecture: flow I 4 autoregressive spline
blocks, hidden 32; flow II 8 coupling spline blocks, hidden ``--hidden`` (96), conditioned on the layer
energies and the energy estimated from their sum (``--voxel-context estimated``, so that the full likelihood
in E is the layer likelihood plus a constant); ``--gaussianize`` adds the marginal Gaussianization of flow
II's coordinates. It trains in float32 within a wall-time budget; the same command runs on a GPU with
``--device cuda``. Checkpoints go to ``--work-dir`` after every epoch; rerun with ``--resume`` after an
interruption. The model directory is replaced as a whole at the end.

    python analyses/train_default.py --minutes 55 --threads 1 --work-dir runs/default --resume
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from calinfer import datasets
from calinfer.geometry import get_geometry
from calinfer.preprocessing import VOXEL_CONTEXTS
from calinfer.showers import Showers
from calinfer.simulation import simulate_showers
from calinfer.surrogate import ShowerSurrogate
from calinfer.training import TrainConfig, train_surrogate

VOXEL_FLOW = {"kind": "coupling", "n_blocks": 8, "n_bins": 8}
LAYER_FLOW = {"kind": "autoregressive", "n_blocks": 4, "hidden": 32, "n_bins": 8}
CHUNK = 20_000
FIRST_SEED = 50_000


def simulated_training_set(n: int, cache: Path, first_seed: int = FIRST_SEED) -> Showers:
    """``n`` fresh photons (1-100 GeV uniform) from chunks of 20k (seed ``first_seed + k``), cached in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    vox, energy = [], []
    for k in range(-(-n // CHUNK)):
        path = cache / f"chunk{k:03d}.npz"
        if not path.is_file():
            s = simulate_showers(CHUNK, energy_range=(1.0, 100.0), seed=first_seed + k)
            tmp = cache / f".chunk{k:03d}.tmp.npz"
            np.savez(tmp, voxels=s.voxels.astype(np.float32), energy=s.incident_energy)
            tmp.rename(path)
        with np.load(path) as d:
            vox.append(d["voxels"])
            energy.append(d["energy"])
    return Showers(voxels=np.concatenate(vox)[:n], geometry=get_geometry("calogan"),
                   incident_energy=np.concatenate(energy)[:n], source=f"simulated photons, seeds {first_seed}+")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "calinfer" / "models" / "default"))
    parser.add_argument("--work-dir", default="runs/default")
    parser.add_argument("--data-cache", default="runs/simdata")
    parser.add_argument("--data", choices=("photons-train", "simulated"), default="photons-train")
    parser.add_argument("--n-train", type=int, default=300_000, help="freshly simulated training photons")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-time budget of the training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=96, help="hidden width of flow II")
    parser.add_argument("--gaussianize", action="store_true", help="marginal Gaussianization of flow II's inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--layer-fraction", type=float, default=0.15, help="share of the budget for flow I")
    parser.add_argument("--voxel-context", choices=VOXEL_CONTEXTS, default="estimated",
                        help="flow II conditioned on log E_inc (incident) or on the layer energies only (layers, "
                             "estimated); see calinfer.preprocessing.ShowerPreprocessing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.data == "simulated":
        train = simulated_training_set(args.n_train, Path(args.data_cache))
        dataset = (f"built-in simulator, {args.n_train} photons, E uniform 1-100 GeV, seeds {FIRST_SEED}+k "
                   f"(chunks of {CHUNK})")
    else:
        train, dataset = datasets.load("photons-train"), "photons-train"
    val = datasets.load("photons-val")
    provenance = {
        "dataset": dataset,
        "validation_dataset": "photons-val",
        "validation_metadata": datasets.describe("photons-val"),
        "script": "analyses/train_default.py",
        "seed": args.seed,
        "command": "python analyses/train_default.py " + " ".join(sys.argv[1:]),
    }
    config = TrainConfig(epochs=args.epochs, batch_size=256, lr=1e-3, patience=6, layer_epochs=300,
                         layer_batch_size=1024, layer_lr=2e-3, layer_patience=30,
                         layer_time_fraction=args.layer_fraction, max_minutes=args.minutes, seed=args.seed,
                         device=args.device, progress=not args.quiet)
    start = time.time()
    train_surrogate(train, args.out, config=config, val_showers=val, layer_flow=LAYER_FLOW,
                    voxel_flow={**VOXEL_FLOW, "hidden": args.hidden}, gaussianize=args.gaussianize,
                    voxel_context=args.voxel_context, work_dir=args.work_dir, resume=args.resume,
                    provenance=provenance)
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
