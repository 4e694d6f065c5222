"""Pack the chunks of ``analyses/generate_dijets.py`` into the embedded dijet sets of ``calinfer/data``.

Three files in the LHC Olympics R&D layout (pandas HDF5, key ``df``, GeV; read by
:func:`calinfer.io.lhco.read_lhco`), named as registered in :mod:`calinfer.datasets`:

* ``dijets-qcd.h5``: QCD chunks whose index k has ``k % reference_every != reference_every - 1``
  (two of every three by default): the background of the search "data";
* ``dijets-qcd-reference.h5``: the other QCD chunks, an independent background sample (every chunk
  is its own Pythia random stream) for the idealized-AD baseline;
* ``dijets-signal.h5``: all signal chunks.

Every event with m_jj below ``--mjj-min`` (2.8 TeV: the trigger and the generator's mHatMin sculpt
the spectrum below) is dropped. The 14 jet columns are stored as float32 rounded to
``--mantissa-bits`` mantissa bits (12: relative rounding below 1.3e-4, i.e. under 0.5 GeV on
m_jj) and ``label`` as int8, zlib-compressed, about 30 bytes per event. The chunk split is fixed by
the chunk index, so re-packing after more chunks were generated only adds events to both QCD files.
The file metadata (attribute ``calinfer_metadata`` of the ``df`` storer, as in the chunks) records
the packer settings, the generator settings and Pythia seeds of every chunk used, the generator
manifests and the event counts; :func:`calinfer.datasets.describe_dijets` returns it.

Example (from the repository root)::

    python analyses/pack_dijets.py --qcd data_gen/qcd_loose_seed2 data_gen/qcd_loose_seed3 \\
        --signal data_gen/signal_seed7
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from calinfer import datasets
from calinfer.errors import InputError
from calinfer.io import atomic_output
from calinfer.io.lhco import JET_COLUMNS, dijet_features, read_lhco, read_lhco_metadata

__all__ = ["chunk_files", "main", "pack", "split_qcd_chunks"]

_CHUNK = re.compile(r"_chunk(\d+)\.h5$")


def chunk_files(directory: Path) -> list[tuple[int, Path]]:
    """``(chunk index, file)`` of the finished chunks in a generator output directory, by index."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory (run analyses/generate_dijets.py first)")
    found = sorted((int(m.group(1)), f) for f in directory.iterdir() if (m := _CHUNK.search(f.name)))
    if not found:
        raise InputError(f"{directory}: no *_chunkNNNNN.h5 files")
    return found


def split_qcd_chunks(indices: list[int], reference_every: int) -> tuple[list[int], list[int]]:
    """Chunk indices for the data background and for the independent reference (every ``reference_every``-th)."""
    if reference_every < 2:
        raise InputError(f"reference_every must be at least 2, got {reference_every}")
    ref = [k for k in indices if k % reference_every == reference_every - 1]
    return [k for k in indices if k % reference_every != reference_every - 1], ref


def _manifests(directory: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(directory.glob("manifest_*.json"))]


def pack(
    name: str,
    files: list[Path],
    manifests: list[dict],
    out_dir: Path,
    *,
    mjj_min: float,
    mantissa_bits: int,
    extra_meta: dict,
) -> dict:
    """Read ``files``, cut, round and write ``out_dir/<name>.h5`` atomically; returns the metadata written."""
    jets = read_lhco(files)
    if "label" not in jets.columns:
        raise InputError(f"{name}: the chunks have no label column; were they written by generate_dijets.py?")
    n_before = len(jets)
    keep = dijet_features(jets)["mjj"].to_numpy() >= mjj_min
    jets = jets[keep].reset_index(drop=True)
    out = pd.DataFrame({c: datasets.round_mantissa(jets[c].to_numpy(), mantissa_bits) for c in JET_COLUMNS})
    out["label"] = jets["label"].to_numpy().astype(np.int8)
    chunk_meta = [read_lhco_metadata(f) for f in files]
    settings = {json.dumps(m.get("pythia_settings")) for m in chunk_meta}
    if len(settings) > 1:
        raise InputError(
            f"{name}: the chunks were generated with different Pythia settings {sorted(settings)}; "
            "mixing generator cuts would sculpt the sample"
        )
    spec = datasets.dijet_spec(name)
    meta = {
        "dataset": name,
        "description": spec.description,
        "role": spec.role,
        "process": spec.process,
        "packed_by": "analyses/pack_dijets.py",
        "packed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mjj_min_tev": mjj_min,
        "storage": {"dtype": "float32", "mantissa_bits": mantissa_bits, "label": "int8", "units": "GeV"},
        "n_events": len(out),
        "n_events_before_cut": n_before,
        "n_generated": int(sum(m.get("n_generated", 0) for m in chunk_meta)),
        "chunks": [
            {
                "file": f.name,
                **{k: m.get(k) for k in ("chunk", "pythia_seed", "n_generated", "n_passed", "sigma_gen_pb")},
            }
            for f, m in zip(files, chunk_meta, strict=True)
        ],
        "generator": chunk_meta[0].get("generator"),
        "generator_settings": chunk_meta[0].get("settings"),
        "pythia_settings": chunk_meta[0].get("pythia_settings"),
        "generator_manifests": manifests,
        **extra_meta,
    }
    target = out_dir / f"{name}.h5"
    with atomic_output(target) as tmp:
        with pd.HDFStore(tmp, mode="w", complevel=9, complib="zlib") as store:
            store.put("df", out, format="fixed", track_times=False)
            store.get_storer("df").attrs.calinfer_metadata = json.dumps(meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--qcd",
        type=Path,
        nargs="+",
        default=[Path("data_gen/qcd_loose_seed2"), Path("data_gen/qcd_loose_seed3")],
        help="QCD chunk dirs",
    )
    parser.add_argument("--signal", type=Path, nargs="+", default=[Path("data_gen/signal_seed7")], help="signal dirs")
    parser.add_argument("--out-dir", type=Path, default=datasets.data_dir())
    parser.add_argument("--mjj-min", type=float, default=2.8, help="lower m_jj cut [TeV]")
    parser.add_argument("--reference-every", type=int, default=3, help="every n-th QCD chunk goes to the reference")
    parser.add_argument("--mantissa-bits", type=int, default=12)
    parser.add_argument(
        "--signal-set",
        nargs=2,
        metavar=("NAME", "DIR"),
        help="pack only the registered signal set NAME (e.g. dijets-signal-x700-y250) from the chunks in DIR",
    )
    args = parser.parse_args(argv)

    t0 = time.time()
    if args.signal_set:
        name, directory = args.signal_set[0], Path(args.signal_set[1])
        if datasets.dijet_spec(name).role != "signal":
            raise InputError(f"{name} is not a signal set; --signal-set packs signal sets only")
        jobs = [(name, [f for _, f in chunk_files(directory)], _manifests(directory), {})]
    else:
        jobs = _default_jobs(args)
    for name, files, manifests, extra in jobs:
        meta = pack(
            name,
            files,
            manifests,
            args.out_dir,
            mjj_min=args.mjj_min,
            mantissa_bits=args.mantissa_bits,
            extra_meta=extra,
        )
        size = (args.out_dir / f"{name}.h5").stat().st_size
        print(
            f"{name}: {meta['n_events']} events with m_jj >= {args.mjj_min} TeV of {meta['n_events_before_cut']} "
            f"from {len(files)} chunks -> {size / 1e6:.2f} MB"
        )
    print(f"packed in {time.time() - t0:.0f} s")
    return 0


def _default_jobs(args: argparse.Namespace) -> list[tuple[str, list[Path], list[dict], dict]]:
    """The three default sets: QCD data and reference (split by chunk index) and the signal."""
    qcd = {d: chunk_files(d) for d in args.qcd}
    data_files, ref_files = [], []
    for chunks in qcd.values():
        data_idx, ref_idx = split_qcd_chunks([k for k, _ in chunks], args.reference_every)
        data_files += [f for k, f in chunks if k in data_idx]
        ref_files += [f for k, f in chunks if k in ref_idx]
    if not ref_files:
        raise InputError(f"need at least {args.reference_every} QCD chunks to fill the reference sample")
    signal_files = [f for d in args.signal for _, f in chunk_files(d)]
    split = {
        "reference_every": args.reference_every,
        "rule": "QCD chunk k goes to the reference when k % reference_every == reference_every - 1",
    }
    return [
        ("dijets-qcd", data_files, [m for d in args.qcd for m in _manifests(d)], split),
        ("dijets-qcd-reference", ref_files, [m for d in args.qcd for m in _manifests(d)], split),
        ("dijets-signal", signal_files, [m for d in args.signal for m in _manifests(d)], {}),
    ]


if __name__ == "__main__":
    sys.exit(main())
