"""Generate LHC-Olympics-like dijet events with Pythia 8 and fastjet.

Processes
---------
``qcd``:    QCD dijets (``HardQCD:all``) at 13 TeV, label 0.
``signal``: W'(3.5 TeV) -> X(500 GeV) Y(100 GeV), X -> q qbar, Y -> q qbar', label 1
            (all three masses configurable).

Reconstruction (truth level, no detector): anti-kT R = 1.0 jets clustered from all visible
final-state particles with |eta| < ``--particle-max-eta``; an event is kept when its leading jet
has pT > ``--trigger-pt`` (1.2 TeV, the LHCO R&D trigger) and there are at least two jets.
For the two leading jets the N-subjettiness ratios tau_1, tau_2, tau_3 are computed in numpy
with exclusive-kT axes (the constituents reclustered with the kT algorithm, R = 1000, and
stopped at N subjets) and the normalised measure with beta = 1, R0 = 1.0:
``tau_N = sum_k pT_k min_j dR(k, axis_j) / sum_k pT_k`` with dR in rapidity and azimuth.

Output: the LHCO R&D features layout (GeV), one pandas HDF5 file (key ``df``) per chunk,
``pxj1 pyj1 pzj1 mj1 tau1j1 tau2j1 tau3j1 pxj2 pyj2 pzj2 mj2 tau1j2 tau2j2 tau3j2 label``.
Jet 1 is the leading jet in pT, jet 2 the sub-leading one. (The LHCO features file does not
order its jets by mass either; every standard analysis takes min/max of the two jet masses,
so the order only matters for the raw columns.) Every chunk is written atomically and carries
its settings, seed and counts (events generated, events passing) as JSON in the attribute
``calinfer_metadata`` of the ``df`` storer; a ``manifest.json`` in the output directory sums
them up. Chunk ``k`` uses the Pythia seed ``seed * 10000 + k + 1``, so a rerun with the same
arguments skips the chunks already on disk and continues where it stopped.

Generator cuts: for QCD ``PhaseSpace:mHatMin`` and ``PhaseSpace:pTHatMin`` skip hard processes that
cannot reach the search range. They must sit well below it: extra radiation caught by the R = 1.0 jets
lifts m_jj and the leading-jet pT above the hard-process values, and the events it lifts have heavier
jets, so a cut near the range removes heavy-jet events preferentially at low m_jj and bends the m_jj
dependence of the features (the sidebands then mislead the CATHODE density estimator).
``analyses/generator_cuts.py`` measures it (7455 triggered events generated with 2000 / 800 GeV):
mHatMin 2600 / pTHatMin 1000 GeV lose 19.5% of the events at m_jj 2.8-3.0 TeV, 10% in 3.3-3.7 and 6%
above 4.1, and the mean lighter-jet mass at 2.8-3.0 TeV falls to 8.5% below that in the signal region
instead of 4%. The defaults (2000 / 800 GeV) still have events at their edges in the search range:
raising pTHatMin to 850 GeV loses about 1% of them, nearly flat in m_jj, so a residual loss of that
order remains. They cost a factor of about 4.5 in efficiency: about 11 events with m_jj > 2.8 TeV per
second and core.
The m_jj spectrum below 2.8 TeV is shaped by the 1.2 TeV trigger
and belongs outside the analysis range.

Example::

    python analyses/generate_dijets.py --process qcd --n-events 500000 --chunk-size 2000 \\
        --seed 2 --out-dir data_gen/qcd_loose_seed2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "DijetGenerator", "main", "nsubjettiness"]

COLUMNS = [
    "pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1",
    "pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2", "label",
]  # fmt: skip


def pythia_settings(args: argparse.Namespace) -> list[str]:
    """Pythia ``readString`` lines for the chosen process (without the seed)."""
    common = [
        "Beams:eCM = 13000.",
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Next:numberShowEvent = 0",
        "Next:numberShowInfo = 0",
        "Next:numberShowProcess = 0",
    ]
    if args.process == "qcd":
        return [
            *common,
            "HardQCD:all = on",
            f"PhaseSpace:pTHatMin = {args.pthat_min:g}",
            f"PhaseSpace:mHatMin = {args.mhat_min:g}",
        ]
    return [
        *common,
        "NewGaugeBoson:ffbar2Wprime = on",
        f"34:m0 = {args.m_wprime:g}",
        f"34:mMin = {args.m_wprime - 500:g}",
        f"34:mMax = {args.m_wprime + 500:g}",
        "34:oneChannel = 1 1.0 100 35 37",  # W'+ -> X(35) Y+(37), isotropic phase space
        f"35:m0 = {args.m_x:g}",
        "35:mWidth = 0.01",
        f"35:mMin = {args.m_x - 1:g}",
        f"35:mMax = {args.m_x + 1:g}",
        "35:oneChannel = 1 0.5 100 1 -1",  # X -> d dbar
        "35:addChannel = 1 0.5 100 2 -2",  # X -> u ubar
        f"37:m0 = {args.m_y:g}",
        "37:mWidth = 0.01",
        f"37:mMin = {args.m_y - 1:g}",
        f"37:mMax = {args.m_y + 1:g}",
        "37:oneChannel = 1 0.5 100 2 -1",  # Y+ -> u dbar
        "37:addChannel = 1 0.5 100 4 -3",  # Y+ -> c sbar
    ]


def nsubjettiness(constituents: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """Normalised N-subjettiness (beta = 1, R0 = 1) of one jet for each axis set.

    ``constituents``: ``(n, 4)`` (pT, rapidity, phi, -) of the jet constituents;
    ``axes``: list of ``(N, 2)`` (rapidity, phi) axis sets, one per N. Returns ``tau_N`` per set,
    0 where a set is empty (fewer constituents than axes).
    """
    pt, y, phi = constituents[:, 0], constituents[:, 1], constituents[:, 2]
    norm = pt.sum()
    out = np.zeros(len(axes))
    for i, ax in enumerate(axes):
        if len(ax) == 0 or norm <= 0:
            continue
        dy = y[:, None] - ax[None, :, 0]
        dphi = np.remainder(phi[:, None] - ax[None, :, 1] + np.pi, 2 * np.pi) - np.pi
        dr = np.sqrt(dy**2 + dphi**2)
        out[i] = float(np.sum(pt * dr.min(axis=1)) / norm)
    return out


class DijetGenerator:
    """Generate events of one process with Pythia and reconstruct the LHCO features."""

    def __init__(self, args: argparse.Namespace, seed: int) -> None:
        import fastjet
        import pythia8mc

        self.fastjet = fastjet
        self.args = args
        self.pythia = pythia8mc.Pythia("", False)
        for line in [*pythia_settings(args), "Random:setSeed = on", f"Random:seed = {seed}"]:
            if not self.pythia.readString(line):
                raise RuntimeError(f"Pythia refused the setting {line!r}")
        if not self.pythia.init():
            raise RuntimeError("Pythia initialisation failed; check the settings")
        # anti-kT R = 1.0 on the visible final state (select = 2) with |eta| < particle_max_eta, clustered
        # inside Pythia by its fastjet core (the same jets as fastjet, without a Python loop per particle);
        # jets come sorted by pT; massSet = 2 keeps the particle masses
        self.jets = pythia8mc.SlowJet(-1, 1.0, 20.0, args.particle_max_eta, 2, 2)
        self.kt = fastjet.JetDefinition(fastjet.kt_algorithm, 1000.0)
        self.n_generated = 0
        self.n_failed = 0

    def _jet_row(self, j: int) -> list[float]:
        """px, py, pz, m and tau_1..3 of jet ``j`` of the last clustering."""
        event = self.pythia.event
        consts = [event[i] for i in self.jets.constituents(j)]
        kin = np.array([(c.pT(), c.y(), c.phi(), 0.0) for c in consts])
        pseudo = [self.fastjet.PseudoJet(c.px(), c.py(), c.pz(), c.e()) for c in consts]
        cs = self.fastjet.ClusterSequence(pseudo, self.kt)
        axes = []
        for n in (1, 2, 3):
            subjets = cs.exclusive_jets(n) if len(consts) >= n else []
            axes.append(np.array([(s.rap(), s.phi_std()) for s in subjets]).reshape(-1, 2))
        taus = nsubjettiness(kin, axes)
        p = self.jets.p(j)
        return [p.px(), p.py(), p.pz(), self.jets.m(j), *taus]

    def next_event(self) -> list[float] | None:
        """Generate one event; return its LHCO row (without label) or ``None`` if it fails the trigger."""
        self.n_generated += 1
        if not self.pythia.next():
            self.n_failed += 1
            return None
        self.jets.analyze(self.pythia.event)
        if self.jets.sizeJet() < 2 or self.jets.pT(0) < self.args.trigger_pt:
            return None
        return self._jet_row(0) + self._jet_row(1)

    def sigma_pb(self) -> tuple[float, float]:
        """Pythia's estimate of the generated cross section and its error in pb."""
        info = self.pythia.infoPython()
        return float(info.sigmaGen() * 1e9), float(info.sigmaErr() * 1e9)


def write_chunk(path: Path, df: pd.DataFrame, metadata: dict) -> None:
    """Write one chunk atomically (temp file in the same directory, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=path.parent)
    os.close(fd)
    try:
        with pd.HDFStore(tmp, mode="w", complevel=5, complib="zlib") as store:
            store.put("df", df, format="fixed", track_times=False)
            store.get_storer("df").attrs.calinfer_metadata = json.dumps(metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, obj: dict) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def chunk_metadata(path: Path) -> dict:
    with pd.HDFStore(path, mode="r") as store:
        return json.loads(store.get_storer("df").attrs.calinfer_metadata)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--process", choices=["qcd", "signal"], required=True)
    p.add_argument("--n-events", type=int, required=True, help="events passing the trigger to write")
    p.add_argument("--chunk-size", type=int, default=5000, help="passing events per output file")
    p.add_argument("--seed", type=int, default=1, help="base seed; chunk k uses seed*10000 + k + 1")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--trigger-pt", type=float, default=1200.0, help="leading-jet pT threshold, GeV")
    p.add_argument("--pthat-min", type=float, default=800.0, help="QCD PhaseSpace:pTHatMin, GeV")
    p.add_argument("--mhat-min", type=float, default=2000.0, help="QCD PhaseSpace:mHatMin, GeV")
    p.add_argument("--m-wprime", type=float, default=3500.0, help="signal W' mass, GeV")
    p.add_argument("--m-x", type=float, default=500.0, help="signal X mass, GeV")
    p.add_argument("--m-y", type=float, default=100.0, help="signal Y mass, GeV")
    p.add_argument("--particle-max-eta", type=float, default=5.0, help="|eta| acceptance of particles")
    args = p.parse_args(argv)
    if args.seed < 0 or args.seed * 10000 + 10000 > 900_000_000:
        p.error("--seed must be in [0, 89998]")
    if args.n_events <= 0 or args.chunk_size <= 0:
        p.error("--n-events and --chunk-size must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    label = 1 if args.process == "signal" else 0
    n_chunks = -(-args.n_events // args.chunk_size)
    settings = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out_dir", "n_events")
    }
    for k in range(n_chunks):
        path = args.out_dir / f"{args.process}_seed{args.seed}_chunk{k:05d}.h5"
        if path.exists():
            continue
        size = min(args.chunk_size, args.n_events - k * args.chunk_size)
        chunk_seed = args.seed * 10000 + k + 1
        gen = DijetGenerator(args, chunk_seed)
        rows: list[list[float]] = []
        t0 = time.time()
        while len(rows) < size:
            row = gen.next_event()
            if row is not None:
                rows.append(row)
        wall = time.time() - t0
        df = pd.DataFrame(np.asarray(rows), columns=COLUMNS[:-1])
        df["label"] = float(label)
        sigma, sigma_err = gen.sigma_pb()
        meta = {
            "generator": "pythia8mc 8.317.2 + fastjet",
            "settings": settings,
            "pythia_settings": pythia_settings(args),
            "chunk": k,
            "pythia_seed": chunk_seed,
            "n_generated": gen.n_generated,
            "n_failed": gen.n_failed,
            "n_passed": len(rows),
            "sigma_gen_pb": sigma,
            "sigma_err_pb": sigma_err,
            "wall_s": wall,
            "jet_order": "pT (jet 1 leading)",
            "units": "GeV",
        }
        write_chunk(path, df, meta)
        print(
            f"{path.name}: {len(rows)} passed of {gen.n_generated} generated in {wall:.0f} s "
            f"({len(rows) / wall:.1f} passed/s, {gen.n_generated / wall:.1f} generated/s), sigma = {sigma:.4g} pb",
            flush=True,
        )
        chunks = sorted(args.out_dir.glob(f"{args.process}_seed{args.seed}_chunk*.h5"))
        metas = [chunk_metadata(c) for c in chunks]
        write_json(
            args.out_dir / f"manifest_{args.process}_seed{args.seed}.json",
            {
                "settings": settings,
                "pythia_settings": pythia_settings(args),
                "chunks": [c.name for c in chunks],
                "n_generated": sum(m["n_generated"] for m in metas),
                "n_passed": sum(m["n_passed"] for m in metas),
                "wall_s": sum(m["wall_s"] for m in metas),
            },
        )


if __name__ == "__main__":
    sys.exit(main())
