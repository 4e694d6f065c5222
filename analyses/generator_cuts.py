"""How much do the QCD generator cuts sculpt the dijet sample? Measure it with looser cuts.

``analyses/generate_dijets.py`` cuts the hard process (``PhaseSpace:mHatMin``, ``PhaseSpace:pTHatMin``)
to spend the time on events in the search range. Events below these cuts can still land there: extra
radiation caught by the R = 1.0 jets raises m_jj and the leading-jet pT above the hard-process values.
Such events have heavier jets, so cutting them away removes heavy-jet events preferentially at low m_jj
and bends the m_jj dependence of the features, which a density estimator interpolating from the
sidebands cannot know about.

This script generates QCD with loose cuts (``--mhat-min``/``--pthat-min``), keeps the true mHat and pTHat of
every event passing the trigger and reports, per m_jj bin, the fraction of events that tighter candidate
cuts would lose and the mean lighter-jet mass of all events and of those the candidates keep. Output:
``generator_cuts.json`` (table and settings) and ``events.npz`` (mHat, pTHat, m_jj, m_j,min per event).

Example (about 9 minutes on one core, about 5000 events with m_jj > 2.8 TeV)::

    python analyses/generator_cuts.py --seconds 540 --out runs/generator_cuts
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import generate_dijets as gen_mod  # the sibling script (sys.path[0] is this directory)
import numpy as np
import pandas as pd

from calinfer.io import atomic_output
from calinfer.io.lhco import JET_COLUMNS, dijet_features

__all__ = ["loss_table", "main"]

MJJ_EDGES = (2.8, 3.0, 3.3, 3.7, 4.1, 13.0)


def loss_table(
    mhat: np.ndarray, pthat: np.ndarray, mjj: np.ndarray, mj_light: np.ndarray, candidates: list[tuple[float, float]]
) -> list[dict]:
    """Per m_jj bin and candidate (mHatMin, pTHatMin) in GeV: lost fraction and mean m_j,min (TeV) of kept events."""
    table = []
    for lo, hi in itertools.pairwise(MJJ_EDGES):
        sel = (mjj >= lo) & (mjj < hi)
        row = {"mjj_low": lo, "mjj_high": hi, "n": int(sel.sum()), "mean_mj_light_all": float(mj_light[sel].mean())}
        for mh, pt in candidates:
            kept = sel & (mhat >= mh) & (pthat >= pt)
            row[f"lost_{mh:g}_{pt:g}"] = float(1 - kept.sum() / max(sel.sum(), 1))
            row[f"mean_mj_light_{mh:g}_{pt:g}"] = float(mj_light[kept].mean()) if kept.any() else float("nan")
        table.append(row)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=540.0, help="generation time")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--mhat-min", type=float, default=2000.0, help="loose PhaseSpace:mHatMin, GeV")
    p.add_argument("--pthat-min", type=float, default=800.0, help="loose PhaseSpace:pTHatMin, GeV")
    p.add_argument(
        "--candidates", default="2600:1000,2400:900,2200:850,2000:850",
        help="tighter cuts to assess, mHatMin:pTHatMin in GeV, comma separated",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    candidates = [tuple(float(v) for v in c.split(":")) for c in args.candidates.split(",")]
    gen_args = gen_mod.parse_args(
        ["--process", "qcd", "--n-events", "1", "--out-dir", str(args.out),
         "--mhat-min", f"{args.mhat_min:g}", "--pthat-min", f"{args.pthat_min:g}"]
    )  # fmt: skip
    gen = gen_mod.DijetGenerator(gen_args, args.seed)
    hard, rows = [], []
    t0 = time.time()
    while time.time() - t0 < args.seconds:
        row = gen.next_event()
        if row is not None:
            info = gen.pythia.infoPython()
            hard.append((info.mHat(), info.pTHat()))
            rows.append(row)
    if not rows:
        print("no event passed the trigger; generate longer", file=sys.stderr)
        return 1
    hard_arr, row_arr = np.asarray(hard), np.asarray(rows)
    features = dijet_features(pd.DataFrame(row_arr, columns=list(JET_COLUMNS)))
    mjj, mj_light = features["mjj"].to_numpy(), features["mj_light"].to_numpy()
    table = loss_table(hard_arr[:, 0], hard_arr[:, 1], mjj, mj_light, candidates)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pythia_settings": gen_mod.pythia_settings(gen_args),
        "n_generated": gen.n_generated,
        "n_passed": len(rows),
        "wall_s": time.time() - t0,
        "min_mhat_in_search_range": float(hard_arr[mjj >= MJJ_EDGES[0], 0].min(initial=np.inf)),
        "min_pthat_in_search_range": float(hard_arr[mjj >= MJJ_EDGES[0], 1].min(initial=np.inf)),
        "table": table,
    }
    with atomic_output(args.out / "generator_cuts.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))
    with atomic_output(args.out / "events.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mhat=hard_arr[:, 0], pthat=hard_arr[:, 1], mjj=mjj, mj_light=mj_light)
    names = [f"{mh:g}/{pt:g}" for mh, pt in candidates]
    print(f"{len(rows)} events passed the trigger of {gen.n_generated} generated ({result['wall_s']:.0f} s)")
    print("m_jj [TeV]  n  <m_j,min> all | lost fraction (<m_j,min> kept) for mHatMin/pTHatMin = " + ", ".join(names))
    for r in table:
        cells = [f"{r[f'lost_{mh:g}_{pt:g}']:.3f} ({r[f'mean_mj_light_{mh:g}_{pt:g}']:.4f})" for mh, pt in candidates]
        head = f"{r['mjj_low']:.1f}-{r['mjj_high']:.1f}  {r['n']:6d}  {r['mean_mj_light_all']:.4f} | "
        print(head + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
