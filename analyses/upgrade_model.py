"""Give a surrogate trained before the read-out threshold and the estimated voxel context both of them.

The flows are kept as they are. The read-out threshold (the smallest non-zero voxel energy) and the energy
response (median of ``sum x~ / E``) are taken from the showers the model was trained on; ``--voxel-context
estimated`` then evaluates flow II at the energy estimated from the layer sum instead of the true one, so its
voxel density no longer depends on E and the full likelihood in E is the layer likelihood plus a constant
(:class:`calinfer.preprocessing.ShowerPreprocessing`). README's ablation upgraded the previous default (commit
f449cde, trained on ``photons-train``) this way:

    python analyses/upgrade_model.py --model DIR --dataset photons-train --out runs/default_upgraded
"""

from __future__ import annotations

import argparse
from pathlib import Path

from calinfer import datasets
from calinfer.preprocessing import VOXEL_CONTEXTS, readout_constants
from calinfer.surrogate import ShowerSurrogate, model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or shipped name")
    parser.add_argument("--dataset", required=True, help="the embedded data set the model was trained on")
    parser.add_argument("--voxel-context", choices=VOXEL_CONTEXTS, default="estimated")
    parser.add_argument("--out", required=True, help="new model directory (must not exist)")
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"Error: {out} exists; choose another --out")
    model = ShowerSurrogate.load(model_path(args.model))
    if (model.preprocessing.voxel_context == "layers") != (args.voxel_context == "layers"):
        raise SystemExit(f"Error: {args.model}: flow II was trained on the {model.preprocessing.voxel_context!r} "
                         f"context, whose size differs from that of {args.voxel_context!r}")
    train = datasets.load(args.dataset)
    pre = model.preprocessing
    pre.energy_response, pre.readout_threshold = readout_constants(train.voxels, train.incident_energy,
                                                                   pre.dequantization_width)
    before, pre.voxel_context = pre.voxel_context, args.voxel_context
    model.provenance["upgraded"] = (f"analyses/upgrade_model.py --dataset {args.dataset}: voxel context "
                                    f"{before} -> {args.voxel_context}, read-out threshold "
                                    f"{pre.readout_threshold:.4g} GeV, energy response {pre.energy_response:.4f}")
    model.save(out)
    print(f"wrote {out}: {model.provenance['upgraded']}")


if __name__ == "__main__":
    main()
