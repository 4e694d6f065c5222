"""Scale-out over files and trainings: local process pools and a real dask.distributed LocalCluster (processes).

Distributed outputs must equal the single-process run array for array, a worker killed in the middle of a
run must cost neither entries nor duplicates, failures must stay confined to their own file, progress must
count every shower once, and seeded trainings must give the same result on a cluster as in-process.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

from calinfer.anomaly import EnergyScale
from calinfer.calibration import Calibrator
from calinfer.distributed import (
    AnomalyTask,
    CalibrateTask,
    InlineExecutor,
    expand_inputs,
    map_ordered,
    model_loads,
    output_paths,
    run_over_files,
)
from calinfer.errors import CalinferError, InputError
from calinfer.geometry import Geometry, Layer
from calinfer.io import read_metadata, read_showers, write_showers
from calinfer.showers import Showers
from calinfer.surrogate import ShowerSurrogate

GEOMETRY = Geometry(
    name="dask-tiny",
    layers=(Layer("front", (1, 3), cell_size_mm=(1.0, 1.0)), Layer("back", (2, 2), cell_size_mm=(1.0, 1.0))),
)
FLOWS = {"layer_flow": {"n_blocks": 2, "hidden": 8}, "voxel_flow": {"n_blocks": 2, "hidden": 8}}
SIZES = {"a.root": 230, "b.h5": 170, "sub/c.root": 90}
CHUNK = 50
SCALE = EnergyScale(value=0.9, uncertainty=0.0, method="fixed", n_showers=0)


def _showers(n: int, seed: int) -> Showers:
    rng = np.random.default_rng(seed)
    energy = rng.uniform(2, 90, n)
    voxels = rng.lognormal(0.0, 0.6, (n, GEOMETRY.n_voxels)) * energy[:, None] / 8
    voxels[rng.random(voxels.shape) < 0.15] = 0.0
    return Showers(voxels=voxels, geometry=GEOMETRY, incident_energy=energy)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A small untrained (randomly perturbed) surrogate and three input files of two formats."""
    root = tmp_path_factory.mktemp("dist")
    train = _showers(400, seed=1)
    model = ShowerSurrogate.create(GEOMETRY, train.voxels, train.incident_energy, seed=3, **FLOWS)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in [*model.layer_flow.parameters(), *model.voxel_flow.parameters()]:
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.save(root / "model")
    (root / "data" / "sub").mkdir(parents=True)
    for i, (name, n) in enumerate(SIZES.items()):
        write_showers(root / "data" / name, _showers(n, seed=10 + i))
    return root


def _inputs(workdir: Path) -> list[Path]:
    return [workdir / "data" / name for name in SIZES]


def _tasks(workdir: Path) -> dict[str, CalibrateTask | AnomalyTask]:
    model = str(workdir / "model")
    return {
        "calibration": CalibrateTask(model=model),
        "anomaly": AnomalyTask(model=model, score="nll", energy_scale=SCALE, scale_source="--scale"),
    }


def _read(path: Path, tree: str) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        arrays = f[tree].arrays(library="np")
    meta = read_metadata(path)
    meta.pop("created_utc")
    arrays["metadata"] = meta
    return arrays


def _assert_identical(report, reference: dict[str, dict[str, np.ndarray]], tree: str) -> None:
    assert report.ok, report.failures
    assert set(report.outputs) == set(reference)
    for source, out in report.outputs.items():
        got, want = _read(out, tree), reference[source]
        assert set(got) == set(want)
        assert got.pop("metadata") == want["metadata"]
        for name in got:  # byte for byte: same dtype, same values
            assert got[name].dtype == want[name].dtype
            assert got[name].tobytes() == want[name].tobytes(), (source, name)


@pytest.fixture(scope="module")
def reference(workdir, tmp_path_factory) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """The single-process run (in this process, one chunk after the other): tree -> input -> branches."""
    out = {}
    for tree, task in _tasks(workdir).items():
        report = run_over_files(
            _inputs(workdir), task, out_dir=tmp_path_factory.mktemp(f"ref-{tree}"), chunk_size=CHUNK, jobs=1
        )
        assert report.ok and report.n_showers == sum(SIZES.values()) and report.n_chunks == 5 + 4 + 2
        out[tree] = {source: _read(path, tree) for source, path in report.outputs.items()}
    return out


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@dataclass(frozen=True)
class KillOnce:
    """Runs ``task``, except that the first attempt at the chunk starting at ``start`` of ``name`` kills its
    own worker process (SIGKILL: no cleanup, no exception, exactly like a machine lost mid-run)."""

    task: object
    marker: str
    name: str
    start: int

    @property
    def tree(self) -> str:
        return self.task.tree

    def entries(self, path: str) -> int:
        return self.task.entries(path)

    def metadata(self, path: str) -> dict:
        return self.task.metadata(path)

    def __call__(self, path: str, entry_start: int, entry_stop: int):
        if path.endswith(self.name) and entry_start == self.start and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.task(path, entry_start, entry_stop)


@dataclass(frozen=True)
class Failing(KillOnce):
    """Raises ``error`` on the chunk at ``start`` of ``name`` (only the first time if ``once``)."""

    error: type = InputError
    once: bool = False

    def __call__(self, path: str, entry_start: int, entry_stop: int):
        if path.endswith(self.name) and entry_start == self.start and not (self.once and os.path.exists(self.marker)):
            Path(self.marker).write_text("failed")
            raise self.error(f"{path}: injected failure at entry {entry_start}")
        return self.task(path, entry_start, entry_stop)


# ---------------------------------------------------------------- inputs and outputs


def test_inputs_from_patterns_and_output_names(workdir, tmp_path):
    data = workdir / "data"
    files = expand_inputs([str(data / "*.root"), str(data / "**" / "*.root"), str(data / "b.h5")])
    assert [f.name for f in files] == ["a.root", "c.root", "b.h5"]  # sorted per pattern, each file once
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(data / "*.parquet")])
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(data / "missing.root")])
    outs = output_paths(files, out_dir=tmp_path / "new" / "dir", suffix="calibration")
    assert outs[0] == tmp_path / "new" / "dir" / "a.calibration.root" and outs[0].parent.is_dir()
    (tmp_path / "x").mkdir()
    clash = [data / "a.root", tmp_path / "x" / "a.root"]
    with pytest.raises(InputError, match="would both be written"):
        output_paths(clash, out_dir=tmp_path, suffix="anomaly")
    with pytest.raises(InputError, match="refusing"):  # an output path that is an input is never written
        run_over_files([data / "a.root"], _tasks(workdir)["anomaly"], outputs=[data / "a.root"], jobs=1)


def test_single_process_run_matches_a_direct_fit_in_input_order(workdir, reference):
    """The chunked run equals fitting each whole file at once: chunking and ordering change nothing."""
    model = ShowerSurrogate.load(workdir / "model")
    for path in _inputs(workdir):
        source = os.path.abspath(path)
        showers = read_showers(path, model.geometry, energy_branch=None)
        direct = Calibrator(model).fit(showers).to_branches()
        for name, values in direct.items():
            np.testing.assert_array_equal(reference["calibration"][source][name], values)
        anomaly = reference["anomaly"][source]
        np.testing.assert_array_equal(anomaly["entry"], np.arange(len(showers)))
        assert len(anomaly["score"]) == SIZES[path.relative_to(workdir / "data").as_posix()]
        assert anomaly["metadata"]["geometry"] == GEOMETRY.id and anomaly["metadata"]["n_entries"] == len(showers)
        assert reference["calibration"][source]["metadata"]["input"] == source


# ---------------------------------------------------------------- failures


def test_failures_stay_in_their_file_and_transient_ones_are_retried(workdir, reference, tmp_path):
    task = _tasks(workdir)["anomaly"]
    bad = Failing(task, str(tmp_path / "m1"), "b.h5", 100, error=InputError)
    report = run_over_files(_inputs(workdir), bad, out_dir=tmp_path / "o1", chunk_size=CHUNK, jobs=1)
    assert not report.ok and report.n_retried == 0  # a calinfer error (bad data) is not retried
    (failure,) = report.failures
    assert failure.path.endswith("b.h5") and (failure.start, failure.stop, failure.attempts) == (100, 150, 1)
    assert not (tmp_path / "o1" / "b.anomaly.root").exists()
    assert report.n_showers == SIZES["a.root"] + SIZES["sub/c.root"]
    for source, out in report.outputs.items():
        np.testing.assert_array_equal(_read(out, "anomaly")["score"], reference["anomaly"][source]["score"])
    with pytest.raises(CalinferError, match=r"b\.h5 \(entries 100-149\)"):
        report.raise_for_failures()

    flaky = Failing(task, str(tmp_path / "m2"), "a.root", 150, error=OSError, once=True)
    seen = []
    report = run_over_files(
        _inputs(workdir), flaky, out_dir=tmp_path / "o2", chunk_size=CHUNK, executor=InlineExecutor(),
        progress=seen.append,
    )  # fmt: skip
    assert report.n_retried == 1 and (tmp_path / "m2").exists()
    _assert_identical(report, reference["anomaly"], "anomaly")
    assert sum(seen) == sum(SIZES.values()) and len(seen) == 11  # every chunk counted once, the retry too

    always = Failing(task, str(tmp_path / "m3"), "c.root", 50, error=OSError)
    (tmp_path / "junk.root").write_text("not a ROOT file")
    report = run_over_files(
        [*_inputs(workdir), tmp_path / "junk.root"], always, out_dir=tmp_path / "o3", chunk_size=CHUNK, jobs=1,
        retries=2,
    )  # fmt: skip
    assert sorted(Path(p).name for p in report.failed_files) == ["c.root", "junk.root"]
    assert {f.attempts for f in report.failures} == {0, 3}  # junk: never started; c: 1 try + 2 retries
    assert len(report.outputs) == 2


# ---------------------------------------------------------------- Dask LocalCluster and the local process pool


def test_dask_run_is_identical_to_the_single_process_run(workdir, reference, client, tmp_path):
    for tree, task in _tasks(workdir).items():
        seen = []
        report = run_over_files(
            [str(workdir / "data" / "**" / "*.*")], task, out_dir=tmp_path / tree, chunk_size=CHUNK,
            executor=client, progress=seen.append,
        )  # fmt: skip
        _assert_identical(report, reference[tree], tree)
        assert sum(seen) == sum(SIZES.values()) and len(seen) == report.n_chunks == 11
    loads = client.run(model_loads)
    assert len(loads) == 2 and max(loads.values()) == 1  # each worker process loaded the model once


def test_local_process_pool_survives_a_killed_worker(workdir, reference, tmp_path):
    """Without Dask: a dead pool process breaks the pool; the run replaces it and resubmits the lost chunks."""
    marker = tmp_path / "killed"
    task = KillOnce(_tasks(workdir)["calibration"], str(marker), "a.root", 100)
    report = run_over_files(_inputs(workdir), task, out_dir=tmp_path / "out", chunk_size=CHUNK, jobs=2)
    assert marker.exists() and report.n_retried >= 1
    _assert_identical(report, reference["calibration"], "calibration")


# ---------------------------------------------------------------- independent trainings


def _sleep_then_square(x: float) -> float:
    time.sleep(x)
    return x * x


def test_map_ordered_returns_submission_order(client):
    delays = [0.6, 0.3, 0.0, 0.1]  # later jobs finish first
    assert map_ordered(_sleep_then_square, delays, executor=client) == [d * d for d in delays]
    assert map_ordered(_sleep_then_square, delays) == [d * d for d in delays]


def test_cathode_on_the_cluster_reproduces_the_local_result(client):
    from calinfer.resonant import Cathode, DensityEstimator, EnsembleMLP, SignalRegion

    rng = np.random.default_rng(5)
    m = 3.0 + rng.exponential(0.35, 3000)
    x = np.stack([0.1 + 0.05 * (m - 3) + 0.04 * rng.normal(size=m.size), rng.beta(3, 3, m.size)], axis=1)
    window = SignalRegion(3.3, 3.7, 3.0, 4.4)
    keep = window.in_range(m)

    def fit(executor):
        return Cathode(
            window, n_flows=2, oversample=2, n_folds=2, seed=7, executor=executor,
            flow=lambda s: DensityEstimator(epochs=2, n_blocks=1, hidden=16, n_best_epochs=1, seed=s),
            classifier=lambda s: EnsembleMLP(epochs=2, hidden=(16,), n_best_epochs=1, seed=s),
        ).fit(m[keep], x[keep])  # fmt: skip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same as the single-threaded workers: identical floating-point reductions
    try:
        local = fit(None)
    finally:
        torch.set_num_threads(threads)
    remote = fit(client)
    assert local.scores_.tobytes() == remote.scores_.tobytes()
    assert local.reference_scores_.tobytes() == remote.reference_scores_.tobytes()
    assert [f.best_epochs_ for f in local.flows_] == [f.best_epochs_ for f in remote.flows_]


# ---------------------------------------------------------------- command line


def _same_as_reference(out: Path, source: str, reference: dict, tree: str) -> None:
    got, want = _read(out, tree), reference[tree][source]
    assert got.pop("metadata") == want["metadata"]
    assert set(got) == {k for k in want if k != "metadata"}
    for name, values in got.items():
        assert values.tobytes() == want[name].tobytes(), (out, name)


def test_cli_many_files_on_a_scheduler_and_the_single_file_path_agree(workdir, reference, client, tmp_path):
    from click.testing import CliRunner

    from calinfer.cli import main

    runner = CliRunner()
    model, pattern = str(workdir / "model"), str(workdir / "data" / "**" / "*.*")
    common = ["--model", model, "--step-size", str(CHUNK)]
    on_cluster = ["--out-dir", str(tmp_path / "cal"), "--scheduler", client.scheduler.address]
    res = runner.invoke(main, ["calibrate", pattern, *on_cluster, *common])
    assert res.exit_code == 0, res.output
    assert "wrote 3 file(s)" in res.output, res.output
    assert re.search(rf"showers\s+{sum(SIZES.values())}\n", res.output)  # the calibration summary
    res = runner.invoke(
        main, ["anomaly", pattern, "--out-dir", str(tmp_path / "ano"), "--jobs", "1", "--scale", "0.9", *common]
    )
    assert res.exit_code == 0, res.output
    assert f"{sum(SIZES.values())}/{sum(SIZES.values())}" in res.output  # the progress bar reached the end
    for path in _inputs(workdir):
        source = os.path.abspath(path)
        _same_as_reference(tmp_path / "cal" / f"{path.stem}.calibration.root", source, reference, "calibration")
        _same_as_reference(tmp_path / "ano" / f"{path.stem}.anomaly.root", source, reference, "anomaly")
    # the classic single-file commands write the same results and metadata (one fit batch per chunk, as in
    # the workers: with several batches per chunk, E_mle moves by ~1e-9 relative when the batches change)
    source = os.path.abspath(workdir / "data" / "a.root")
    res = runner.invoke(main, ["calibrate", source, "--out", str(tmp_path / "one.root"), "--workers", "1", *common])
    assert res.exit_code == 0, res.output
    _same_as_reference(tmp_path / "one.root", source, reference, "calibration")
    res = runner.invoke(main, ["anomaly", source, "-o", str(tmp_path / "two.root"), "--scale", "0.9", *common])
    assert res.exit_code == 0, res.output
    _same_as_reference(tmp_path / "two.root", source, reference, "anomaly")
    # usage errors
    res = runner.invoke(main, ["calibrate", pattern, "--out", str(tmp_path / "x.root"), *common])
    assert res.exit_code == 2 and "--out-dir" in res.output
    res = runner.invoke(main, ["anomaly", str(tmp_path / "none*.root"), "--out-dir", str(tmp_path), "--scale", "1"])
    assert res.exit_code == 2 and "no file matches" in res.output


# ---------------------------------------------------------------- last: restarts a cluster worker


def test_killed_dask_worker_loses_and_duplicates_nothing(workdir, reference, client, tmp_path):
    marker = tmp_path / "killed"
    task = KillOnce(_tasks(workdir)["anomaly"], str(marker), "b.h5", 50)
    report = run_over_files(_inputs(workdir), task, out_dir=tmp_path / "out", chunk_size=CHUNK, executor=client)
    assert marker.exists()  # a worker really died holding that chunk
    _assert_identical(report, reference["anomaly"], "anomaly")
    for source, n in zip(reference["anomaly"], SIZES.values(), strict=True):
        np.testing.assert_array_equal(_read(report.outputs[source], "anomaly")["entry"], np.arange(n))


def test_resonant_and_parallel_sit_below_distributed():
    """calinfer.parallel needs no other calinfer module, and calinfer.resonant never loads calinfer.distributed
    (they imported each other through map_ordered); the names stay importable from calinfer.distributed."""
    import subprocess
    import sys

    import calinfer.distributed as dist
    import calinfer.parallel as par

    code = (
        "import sys; import calinfer; a = set(sys.modules); import calinfer.parallel; a = set(sys.modules) - a;"
        "import calinfer.resonant; b = [m for m in sys.modules if m.startswith('calinfer.distributed')];"
        "print(sorted(m for m in a if m.startswith('calinfer')), b)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['calinfer.parallel'] []"
    assert dist.map_ordered is par.map_ordered and dist.InlineExecutor is par.InlineExecutor


def test_many_file_calibration_with_a_coverage_calibrated_level(workdir, tmp_path):
    """CalibrateTask(interval_level=...) fits with that level (as Calibrator does in-process) and records it."""
    from calinfer.calibration import IntervalLevel

    level = IntervalLevel((5.0, 20.0, 80.0), (0.6, 0.8, 0.7), (0.02, 0.02, 0.02), (0.8, 0.0, -0.05), 1.0, 0.683, 100,
                          "layers")
    task = CalibrateTask(model=str(workdir / "model"), interval_level=level)
    path = _inputs(workdir)[0]
    report = run_over_files([path], task, out_dir=tmp_path / "out", chunk_size=CHUNK, jobs=1)
    assert report.ok
    got = _read(report.outputs[str(path)], "calibration")
    assert "Delta(-ln L) = t(E_mle)" in got["metadata"]["interval"]
    model = ShowerSurrogate.load(workdir / "model")
    expected = Calibrator(model, interval_level=level).fit(read_showers(path, model.geometry, energy_branch=None))
    np.testing.assert_allclose(got["E_lo"], expected.e_lo, rtol=1e-6)
    np.testing.assert_allclose(got["E_hi"], expected.e_hi, rtol=1e-6)
    plain = Calibrator(model).fit(read_showers(path, model.geometry, energy_branch=None))
    assert np.all(got["E_hi"] - got["E_lo"] >= plain.e_hi - plain.e_lo - 1e-9)  # levels above 0.5: wider intervals


def test_tasks_find_a_shipped_model_by_name(tmp_path, monkeypatch):
    """``--model pions`` in a many-file run: the task holds the shipped model's directory, not ./pions."""
    from calinfer.surrogate import model_path

    monkeypatch.chdir(tmp_path)
    shipped = os.path.abspath(model_path("pions"))
    assert Path(shipped, "surrogate.json").exists()
    assert CalibrateTask(model="pions").model == shipped
    assert AnomalyTask(model="pions", score="profile").model == shipped
    assert CalibrateTask(model="some/dir").model == str(tmp_path / "some" / "dir")  # other paths made absolute
