"""Throughput of the likelihood anomaly scores (showers per second) and where their time goes.

For every score of ``calinfer.anomaly.SCORE_NAMES`` selected with ``--scores``, scores ``--n`` photons of the
embedded ``photons-val`` set (1-100 GeV) ``--repeat`` times after a warm-up on 64 showers and reports showers per
second of the fastest pass (the median beside it: the spread is the machine's noise), the number of surrogate calls
and (shower, energy) pairs per shower by part, and the share of the time spent inside the surrogate's ``log_prob``
by part (the rest is the score's own numpy work). The ``-tail`` scores are calibrated first (that cost is reported
separately: it is paid once per surrogate, not per shower).

Run: ``python benchmarks/bench_anomaly.py [--model DIR] [--threads 1] [--n 2000] [--batch-size 64]
[--repeat 3] [--scores nll nll-mixed ...] [--profile-locate calibration|full|layers] [--out bench_anomaly.json]``;
prints a table and writes the numbers as JSON. The showers per second scale with the machine's load; the surrogate pairs
per shower do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from calinfer import datasets
from calinfer.anomaly import SCORE_NAMES, make_score
from calinfer.io import atomic_output
from calinfer.surrogate import load_default, load_model

DEFAULT_SCORES = ("nll", "nll-mixed", "layers", "voxels", "profile", "profile-mixed", "nll-mixed-tail")


def _pairs(n_showers: int, energies) -> int:
    """(shower, energy) pairs of a surrogate call: energies (N,) pair one each, (1, G) or (N, G) give G each."""
    return n_showers * (np.shape(energies)[1] if np.ndim(energies) == 2 else 1)


class TimedSurrogate:
    """Forwards to a surrogate and records, per part, the calls, (shower, energy) pairs and seconds spent."""

    def __init__(self, surrogate) -> None:
        self._surrogate = surrogate
        self.calls: dict[str, int] = defaultdict(int)
        self.pairs: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def __getattr__(self, name):
        return getattr(self._surrogate, name)

    def reset(self) -> None:
        self.calls.clear()
        self.pairs.clear()
        self.seconds.clear()

    def _timed(self, key: str, n_pairs: int, call):
        start = time.perf_counter()
        out = call()
        self.seconds[key] += time.perf_counter() - start
        self.calls[key] += 1
        self.pairs[key] += n_pairs
        return out

    def log_prob(self, showers, energies, *, part="full", **kwargs):
        call = lambda: self._surrogate.log_prob(showers, energies, part=part, **kwargs)  # noqa: E731
        return self._timed(part, _pairs(len(showers), energies), call)

    def log_prob_layers(self, layer_energies, energies, **kwargs):
        call = lambda: self._surrogate.log_prob_layers(layer_energies, energies, **kwargs)  # noqa: E731
        return self._timed("layers", _pairs(len(layer_energies), energies), call)

    def sample(self, energies, seed=0, **kwargs):
        return self._timed("sample", len(energies), lambda: self._surrogate.sample(energies, seed, **kwargs))


def bench_score(name: str, surrogate: TimedSurrogate, showers, train, args) -> dict:
    options: dict = {"device": args.device, "batch_size": args.batch_size}
    if name.startswith("profile"):
        options["locate"] = None if args.profile_locate == "full" else args.profile_locate
    if name.endswith("-tail"):
        options.update(n_energies=args.tail_energies, n_per_energy=args.tail_per_energy)
    score = make_score(name, surrogate, **options)
    surrogate.reset()
    start = time.perf_counter()
    score.fit(train)
    fit_s = time.perf_counter() - start
    score.evaluate(showers[:64])  # warm-up
    passes = []
    for _ in range(args.repeat):
        surrogate.reset()
        start = time.perf_counter()
        for a in range(0, len(showers), args.chunk):
            score.evaluate(showers[a : a + args.chunk])
        passes.append(time.perf_counter() - start)
    elapsed = passes[-1]  # the time shares below are those of the last pass
    inside = sum(surrogate.seconds.values())
    return {
        "score": name,
        "showers_per_s": len(showers) / min(passes),
        "showers_per_s_median": len(showers) / float(np.median(passes)),
        "seconds": passes,
        "fit_seconds": fit_s,
        "pairs_per_shower": {k: v / len(showers) for k, v in surrogate.pairs.items()},
        "calls": dict(surrogate.calls),
        "time_share": {**{k: v / elapsed for k, v in surrogate.seconds.items()}, "score": 1 - inside / elapsed},
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="surrogate directory (default: the shipped pretrained surrogate)")
    p.add_argument("--n", type=int, default=2000, help="photons scored per score")
    p.add_argument("--scores", nargs="+", default=list(DEFAULT_SCORES), choices=SCORE_NAMES)
    p.add_argument("--batch-size", type=int, help="(shower, energy) pairs per surrogate call (default: the score's)")
    p.add_argument("--chunk", type=int, default=2000, help="showers per evaluate() call")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per score: the fastest is reported (the "
                   "others measure the machine's noise) with the median beside it")
    p.add_argument("--tail-energies", type=int, default=16, help="grid energies of the -tail calibration")
    p.add_argument("--tail-per-energy", type=int, default=400, help="surrogate showers per grid energy")
    p.add_argument("--profile-locate", default="calibration", choices=("calibration", "full", "layers"),
                   help="ProfileScore(locate=...) of the profile scores ('full': the 32-point grid with zoom)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="JSON output file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    surrogate = TimedSurrogate(load_model(args.model) if args.model else load_default())
    photons = datasets.load("photons-val")
    showers, train = photons[: args.n], photons[args.n : args.n + 5000]
    rows = []
    batch = args.batch_size or "default"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.n} photons, {args.threads} thread(s), device {args.device}, batch size {batch}, load average {load}")
    print(f"{'score':>20} {'showers/s':>10} {'median':>7} {'fit s':>7}  pairs/shower by part      time share by part")
    for name in args.scores:
        row = bench_score(name, surrogate, showers, train, args)
        rows.append(row)
        pairs = ", ".join(f"{k} {v:.3g}" for k, v in row["pairs_per_shower"].items())
        share = ", ".join(f"{k} {v:.0%}" for k, v in row["time_share"].items())
        print(f"{name:>20} {row['showers_per_s']:10.0f} {row['showers_per_s_median']:7.0f} {row['fit_seconds']:7.1f}  "
              f"{pairs:<25} {share}", flush=True)
    if args.out:
        record = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                  "device": args.device, "n": args.n, "batch_size": args.batch_size,
                  "profile_locate": args.profile_locate, "load_average": os.getloadavg(), "rows": rows}
        with atomic_output(Path(args.out)) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
