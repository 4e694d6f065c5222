"""Combine flow I of one surrogate with flow II of another trained on the same showers into one model.

The two flows have disjoint parameters and additive losses, so they can be trained in separate processes
(for example flow I with a long budget beside a long flow-II run) and joined afterwards. The two models must
share flow I's preprocessing exactly (same training showers, seed and dequantization width); flow II's
preprocessing and context come with the voxel model. The result records both sources and training histories.

    python analyses/combine_flows.py --layers runs/flowI_run --voxels runs/new_default --out runs/combined
"""

from __future__ import annotations

import argparse

from calinfer.errors import ModelError
from calinfer.surrogate import ShowerSurrogate

FLOW_I_PREPROCESSING = ("layer_slices", "reference", "dequantization_width", "log_energy_mean", "log_energy_scale",
                        "layer_mean", "layer_scale")
"""The preprocessing constants flow I depends on; flow II's (ratios, Gaussianization, context) come from ``voxels``."""


def combine(layers: ShowerSurrogate, voxels: ShowerSurrogate) -> ShowerSurrogate:
    """A surrogate with ``layers``' flow I and ``voxels``' flow II (identical preprocessing required)."""
    a, b = layers.preprocessing.to_dict(), voxels.preprocessing.to_dict()
    if any(a[k] != b[k] for k in FLOW_I_PREPROCESSING) or layers.geometry.id != voxels.geometry.id:
        raise ModelError("the two surrogates do not share flow I's preprocessing; train both on the same showers")
    training = {**voxels.training, "layers": layers.training.get("layers", {"source": "checkpoint"})}
    provenance = {**voxels.provenance, "layer_flow_from": layers.provenance}
    return ShowerSurrogate(voxels.geometry, voxels.preprocessing, layers.layer_flow, voxels.voxel_flow,
                           provenance=provenance, training=training, energy_range=voxels.energy_range)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", required=True, help="model whose flow I is kept")
    parser.add_argument("--voxels", required=True, help="model whose flow II is kept")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    combined = combine(ShowerSurrogate.load(args.layers), ShowerSurrogate.load(args.voxels))
    combined.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
