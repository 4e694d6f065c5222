"""One call that compares generated with reference showers: separation powers of every feature and classifier AUCs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from calinfer.evaluation.classifier_test import ClassifierResult, classifier_test
from calinfer.evaluation.features import feature_list, shower_features
from calinfer.evaluation.separation import Separation, compare_feature
from calinfer.showers import Showers

__all__ = ["Evaluation", "evaluate_showers"]


@dataclass
class Evaluation:
    """Result of :func:`evaluate_showers`.

    Attributes
    ----------
    separations: one binned comparison per feature, in :func:`~calinfer.evaluation.features.feature_list` order.
    classifiers: one repeated classifier test per input kind.
    n_reference, n_generated: sample sizes.
    info: free-form provenance (model, reference, seed, ...) copied into the JSON.
    """

    separations: list[Separation]
    classifiers: list[ClassifierResult]
    n_reference: int
    n_generated: int
    info: dict = field(default_factory=dict)

    @property
    def mean_separation(self) -> float:
        """Mean separation power over the features."""
        return float(np.mean([s.value for s in self.separations]))

    def rows(self) -> list[list[str]]:
        """Table rows (header first): feature, separation power, its noise floor."""
        out = [["feature", "separation power", "noise floor"]]
        out += [[s.feature.name, f"{s.value:.4f}", f"{s.noise_floor:.4f}"] for s in self.separations]
        out.append(["mean", f"{self.mean_separation:.4f}", f"{np.mean([s.noise_floor for s in self.separations]):.4f}"])
        return out

    def layer_rows(self, names: Sequence[str]) -> list[list[str]]:
        """Table rows (header first): per layer, the mean and largest separation power of its features."""
        out = [["layer", "mean separation", "worst feature", "its separation"]]
        for k, name in enumerate(names):
            seps = [s for s in self.separations if s.feature.layer == k]
            if seps:
                worst = max(seps, key=lambda s: s.value)
                out.append([name, f"{np.mean([s.value for s in seps]):.4f}", worst.feature.name, f"{worst.value:.4f}"])
        return out

    def worst(self, n: int = 4) -> list[Separation]:
        """The ``n`` features with the largest separation power, worst first."""
        return sorted(self.separations, key=lambda s: s.value, reverse=True)[:n]

    def classifier_rows(self) -> list[list[str]]:
        """Table rows (header first): classifier inputs, AUC mean +- std, runs, test showers per class."""
        out = [["classifier inputs", "AUC", "runs", "test showers/class"]]
        out += [[c.inputs, f"{c.mean:.4f} ± {c.std:.4f}", str(len(c.aucs)), str(c.n_test)] for c in self.classifiers]
        return out

    def to_text(self) -> str:
        """Plain-text tables for the terminal."""
        head = f"reference showers: {self.n_reference}, generated showers: {self.n_generated}"
        lines = [head, "", *_aligned(self.rows())]
        if self.info.get("layers"):
            lines += ["", *_aligned(self.layer_rows(self.info["layers"]))]
        if self.classifiers:
            lines += ["", *_aligned(self.classifier_rows())]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The same tables in Markdown, with the provenance."""
        lines = ["# Surrogate quality evaluation", ""]
        lines += [f"- {k}: {v}" for k, v in self.info.items()]
        lines += [f"- reference showers: {self.n_reference}", f"- generated showers: {self.n_generated}", ""]
        lines += ["## Separation power of high-level features", "", *_markdown(self.rows()), ""]
        layer_names = self.info.get("layers")
        if layer_names:
            lines += ["## Per layer", "", *_markdown(self.layer_rows(layer_names)), ""]
        worst = ", ".join(f"{s.feature.name} ({s.value:.4f})" for s in self.worst())
        lines += [f"Worst features: {worst} (their histograms: `hist_<feature>.*`).", ""]
        lines += [
            "Separation power 0.5 Σ (h1-h2)²/(h1+h2) on unit-normalised histograms (0: identical, "
            "1: disjoint), under/overflow and undefined values included; the noise floor is its expected "
            "value for two samples of these sizes from one distribution.",
            "",
        ]
        if not self.classifiers:
            return "\n".join(lines)
        lines += ["## Classifier test", "", *_markdown(self.classifier_rows()), ""]
        lines += [
            "AUC of a gradient-boosted classifier separating generated from reference showers on held-out "
            "showers (0.5: indistinguishable), mean ± standard deviation over independent trainings.",
            "",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "info": self.info,
            "n_reference": self.n_reference,
            "n_generated": self.n_generated,
            "mean_separation_power": self.mean_separation,
            "separation": [s.to_dict() for s in self.separations],
            "classifier": [c.to_dict() for c in self.classifiers],
        }


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]) for r in rows
    ]


def _markdown(rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(rows[0])} |", "|" + "---|" * len(rows[0])] + [f"| {' | '.join(r)} |" for r in rows[1:]]


def evaluate_showers(
    reference: Showers,
    generated: Showers,
    *,
    n_bins: int = 50,
    classifier_inputs: Sequence[str] = ("features",),
    n_runs: int = 5,
    max_showers: int | None = None,
    threshold: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    info: dict | None = None,
) -> Evaluation:
    """Compare ``generated`` with ``reference`` showers (same geometry).

    Computes the features of both (sparsity threshold ``threshold`` GeV), the separation power of every
    feature on ``n_bins`` reference-based bins, and a repeated classifier test (``n_runs`` trainings) for
    each entry of ``classifier_inputs`` (``"features"``, ``"voxels"``) using at most ``n_threads`` threads.
    """
    reference.geometry.check(generated.geometry, what=f"generated showers {generated.source}")
    incident = reference.incident_energy is not None and generated.incident_energy is not None
    f_ref = shower_features(reference, threshold=threshold)
    f_gen = shower_features(generated, threshold=threshold)
    separations = [
        compare_feature(f_ref[f.name], f_gen[f.name], f, n_bins)
        for f in feature_list(reference.geometry, incident=incident)
    ]
    classifiers = [
        classifier_test(
            reference,
            generated,
            inputs=kind,
            n_runs=n_runs,
            max_showers=max_showers,
            threshold=threshold,
            n_threads=n_threads,
            seed=seed + 7 * k,
        )
        for k, kind in enumerate(classifier_inputs)
    ]
    return Evaluation(separations, classifiers, len(reference), len(generated), dict(info or {}))
