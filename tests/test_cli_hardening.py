"""Misuse of the ``calinfer`` command: every bad input ends in one ``Error:`` line, loses nothing, leaves nothing.

Each test makes its bad input itself, runs the command in-process (click's CliRunner) and checks the exit
status, that the message names the file and the problem, and (by checksums of the whole directory) that
no file was changed or left behind. No test trains anything; the calibrations fit 20 showers.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from calinfer.cli import main
from calinfer.errors import InputError
from calinfer.io import write_showers
from calinfer.io.atomic import reserve_outputs
from calinfer.showers import Showers
from calinfer.simulation import simulate_showers


def snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory`` (hidden ones included), by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def invoke(args: list[str], **kwargs):
    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def error_line(result) -> str:
    """The one ``Error:`` line of a failed run (no traceback anywhere)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


@pytest.fixture(scope="module")
def photons() -> Showers:
    return simulate_showers(20, seed=3)


@pytest.fixture
def showers_file(tmp_path: Path, photons: Showers) -> Path:
    return write_showers(tmp_path / "small.root", photons)


def with_voxels(photons: Showers, voxels: np.ndarray) -> Showers:
    return Showers(voxels=voxels, geometry=photons.geometry, incident_energy=photons.incident_energy)


# ---------------------------------------------------------------- one error path


@pytest.mark.parametrize(
    "command",
    [
        ["info", "{missing}"],
        ["calibrate", "{missing}", "--out", "{tmp}/out.root"],
        ["anomaly", "{missing}", "--out", "{tmp}/out.root"],
        ["cathode", "{missing}", "--out", "{tmp}/out"],
    ],
)
def test_missing_input_is_one_error_line(tmp_path, showers_file, command):
    before = snapshot(tmp_path)
    args = [c.format(missing=tmp_path / "nonexistent.root", tmp=tmp_path) for c in command]
    line = error_line(invoke(args))
    assert "nonexistent.root" in line and "no such file" in line
    assert snapshot(tmp_path) == before


def test_debug_flag_and_environment_show_the_traceback(tmp_path):
    missing = tmp_path / "nonexistent.root"
    for args, env in ((["--debug", "info", missing], {}), (["info", missing], {"CALINFER_DEBUG": "1"})):
        result = CliRunner().invoke(main, [str(a) for a in args], env=env)
        assert isinstance(result.exception, InputError) and "nonexistent.root" in str(result.exception)


def test_unexpected_error_is_one_line_pointing_to_debug(tmp_path, showers_file, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr("calinfer.cli.info_cmd.summarize_file", broken)
    line = error_line(invoke(["info", showers_file]))
    assert "unexpected TypeError: boom" in line and "--debug" in line


def _unwritable_directory(tmp_path: Path) -> Path:
    locked = tmp_path / "readonly"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (locked / "probe").touch()
    except OSError:
        return locked
    (locked / "probe").unlink()  # running as root: chmod does not stop us; a pseudo file system does
    for candidate in (Path("/sys/fs"), Path("/proc/sys")):
        try:
            (candidate / "calinfer-probe").touch()
        except OSError:
            return candidate
    pytest.skip("no unwritable directory available")


def test_unwritable_output_directory_fails_before_fitting(tmp_path, showers_file):
    target = _unwritable_directory(tmp_path)
    before = snapshot(tmp_path)
    line = error_line(invoke(["calibrate", showers_file, "--out", target / "out.root"]))
    assert str(target) in line and "cannot" in line
    assert "showers/s" not in line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- no clobbering


def test_existing_outputs_are_never_replaced_unasked(tmp_path, showers_file, photons):
    other = write_showers(tmp_path / "other_showers.root", simulate_showers(30, seed=4))
    before = snapshot(tmp_path)
    for args in (
        ["calibrate", showers_file, "--out", other],
        ["anomaly", showers_file, "--out", other, "--scale", "1.0"],
        ["simulate", "--n", "3", "--out", other, "--no-progress"],
    ):
        line = error_line(invoke(args))
        assert "other_showers.root" in line and "exists" in line and "--overwrite" in line
        assert snapshot(tmp_path) == before
    result = invoke(["calibrate", showers_file, "--out", other, "--overwrite"])
    assert result.exit_code == 0, result.output
    with uproot.open(other) as f:
        assert f["calibration"].num_entries == 20


def test_output_directory_with_results_is_refused(tmp_path, dijets):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    before = snapshot(tmp_path)
    line = error_line(invoke(["cathode", dijets["bkg"], "--out", out]))
    assert "refusing to write into" in line and "summary.json" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before


def _hold_lock(target: Path) -> subprocess.Popen:
    """Another process that reserves ``target`` like a running calinfer command, until its stdin closes."""
    code = textwrap.dedent(
        f"""
        import sys
        from calinfer.io.atomic import reserve_outputs
        with reserve_outputs([{str(target)!r}]):
            print("ready", flush=True)
            sys.stdin.read()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_second_run_on_one_output_fails_and_a_killed_run_blocks_nothing(tmp_path, showers_file):
    target = tmp_path / "out.root"
    holder = _hold_lock(target)
    try:
        before = snapshot(tmp_path)
        line = error_line(invoke(["calibrate", showers_file, "--out", target, "--overwrite"]))
        assert "out.root" in line and "another calinfer run" in line and str(holder.pid) in line
        assert snapshot(tmp_path) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: its lock file stays, but the kernel released the lock
        holder.wait()
    assert (tmp_path / ".out.root.lock").exists()
    result = invoke(["calibrate", showers_file, "--out", target])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.root", "small.root"]


def test_stale_temporary_files_are_removed_and_reported(tmp_path, showers_file):
    stale = tmp_path / ".out.root.k3j_9x2a.tmp"  # what a killed run leaves (tempfile.mkstemp name)
    stale.write_bytes(b"half a ROOT file")
    unrelated = tmp_path / ".out.root.notes"
    unrelated.write_text("mine")
    result = invoke(["calibrate", showers_file, "--out", tmp_path / "out.root"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and unrelated.read_text() == "mine"
    assert any(".out.root.k3j_9x2a.tmp" in w and "interrupted run" in w for w in warnings_of(result))


def test_many_files_refuse_existing_outputs_before_any_work(tmp_path, showers_file, photons):
    second = write_showers(tmp_path / "second.root", photons[:7])
    out = tmp_path / "cal"
    out.mkdir()
    (out / "second.calibration.root").write_bytes(b"an earlier result")
    before = snapshot(tmp_path)
    line = error_line(invoke(["calibrate", showers_file, second, "--out-dir", out, "--jobs", "1"]))
    assert "second.calibration.root" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before
    holder = _hold_lock(out / "small.calibration.root")  # another run writes one of the outputs
    try:
        held = snapshot(tmp_path)
        line = error_line(invoke(["calibrate", showers_file, second, "--out-dir", out, "--jobs", "1", "--overwrite"]))
        assert "small.calibration.root" in line and "another calinfer run" in line and snapshot(tmp_path) == held
    finally:
        holder.stdin.close()
        holder.wait()
    result = invoke(["calibrate", showers_file, second, "--out-dir", out, "--jobs", "1", "--overwrite"])
    assert result.exit_code == 0, result.output
    with uproot.open(out / "second.calibration.root") as f:
        assert f["calibration"].num_entries == 7


def test_no_clobber_holds_against_a_file_created_while_writing(tmp_path):
    from calinfer.io import atomic_output

    target = tmp_path / "out.bin"
    with pytest.raises(InputError, match="created by another program"), atomic_output(target, overwrite=False) as tmp:
        tmp.write_bytes(b"new result")
        target.write_bytes(b"someone else's file")
    assert target.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_stale_model_directories_are_removed(tmp_path):
    (tmp_path / ".model.tmp-ab12cd34").mkdir()  # a surrogate save killed half-way
    (tmp_path / ".model.tmp-ab12cd34" / "weights.pt").write_bytes(b"partial")
    (tmp_path / ".modelx.tmp-ab12cd34").mkdir()  # another output's: left alone
    with pytest.warns(UserWarning, match=r"removed .*\.model\.tmp-ab12cd34, a temporary directory"):
        with reserve_outputs(directories=[tmp_path / "model"]):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".modelx.tmp-ab12cd34", "model"]


def test_reserve_outputs_leaves_no_directory_behind_on_failure(tmp_path):
    out = tmp_path / "results"
    with pytest.raises(RuntimeError), reserve_outputs(directories=[out]):
        assert out.is_dir()
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- output format


def test_output_suffix_must_match_the_format(tmp_path, showers_file, photons):
    before = snapshot(tmp_path)
    line = error_line(invoke(["calibrate", showers_file, "--out", tmp_path / "x.h5"]))
    assert "x.h5" in line and ".root" in line
    line = error_line(invoke(["simulate", "--n", "2", "--out", tmp_path / "x.txt", "--no-progress"]))
    assert "x.txt" in line
    assert snapshot(tmp_path) == before
    from calinfer.io import RootTreeWriter
    from calinfer.io.hdf5 import write_hdf5

    with pytest.raises(InputError, match=r"x\.h5.*name the output \.root"):
        RootTreeWriter(tmp_path / "x.h5", tree="t")
    with pytest.raises(InputError, match=r"y\.root.*HDF5"):
        write_hdf5(tmp_path / "y.root", photons)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- data outside what the model knows


def test_unit_mixups_are_warned_with_their_cause(tmp_path, photons, showers_file):
    gev = tmp_path / "gev.h5"  # CaloChallenge layout (must be MeV) holding GeV: read 1000x too small
    with h5py.File(gev, "w") as f:
        f["incident_energies"] = photons.incident_energy.reshape(-1, 1)
        f["showers"] = photons.voxels
    mev = write_showers(tmp_path / "mev.root", with_voxels(photons, np.round(photons.voxels * 1000)))
    cases = [(gev, "1000x too small"), (mev, "1000x too large"), (showers_file, None)]
    for i, (path, cause) in enumerate(cases):
        result = invoke(["calibrate", path, "--out", tmp_path / f"cal{i}.root"])
        assert result.exit_code == 0, result.output
        found = warnings_of(result)
        if cause is None:
            assert found == []  # the same showers in the right units: nothing to say
        else:
            assert len(found) == 1 and path.name in found[0] and cause in found[0] and "MeV" in found[0]
            assert "20 of 20 showers" in found[0]


def test_energy_range_outside_the_training_range_is_warned(tmp_path, showers_file):
    result = invoke(["calibrate", showers_file, "--out", tmp_path / "a.root", "--energy-range", "200", "500"])
    assert result.exit_code == 0
    (warning,) = [w for w in warnings_of(result) if "--energy-range" in w]
    assert "200 500" in warning and "trained on" in warning
    result = invoke(["calibrate", showers_file, "--out", tmp_path / "b.root", "--energy-range", "5", "50"])
    assert not [w for w in warnings_of(result) if "--energy-range" in w]


def test_empty_showers_get_their_own_status_bit(tmp_path, photons):
    voxels = photons.voxels.copy()
    voxels[[2, 7, 11]] = 0.0
    path = write_showers(tmp_path / "zeros.root", with_voxels(photons, voxels))
    result = invoke(["calibrate", path, "--out", tmp_path / "cal.root"])
    assert result.exit_code == 0, result.output
    with uproot.open(tmp_path / "cal.root") as f:
        status = f["calibration"]["status"].array(library="np")
    np.testing.assert_array_equal(np.flatnonzero(status & 32), [2, 7, 11])
    assert any("3 of 20 showers deposit no energy" in w for w in warnings_of(result))
    assert "empty        " in result.stdout or "empty  " in result.stdout


def test_info_comments_on_an_implausible_energy_ratio(tmp_path, photons, showers_file):
    mev = write_showers(tmp_path / "mev.root", with_voxels(photons, photons.voxels * 1000))
    line = next(x for x in invoke(["info", mev]).stdout.splitlines() if x.startswith("deposited/incident"))
    assert "implausible" in line and "MeV" in line
    line = next(x for x in invoke(["info", showers_file]).stdout.splitlines() if x.startswith("deposited/incident"))
    assert "implausible" not in line


# ---------------------------------------------------------------- messages in the words of the command line


def test_hints_name_command_line_options(tmp_path, photons):
    voxels = photons.voxels.copy()
    voxels[4, 9] = -0.5
    negative = write_showers(tmp_path / "neg.root", with_voxels(photons, voxels))
    line = error_line(invoke(["calibrate", negative, "--out", tmp_path / "o.root"]))
    assert "neg.root" in line and "--clip-negative 0.5" in line and "clip_negative" not in line

    other = write_showers(tmp_path / "ds1.root", simulate_showers(3, geometry="calochallenge-ds1-photons", seed=1))
    line = error_line(invoke(["calibrate", other, "--out", tmp_path / "o.root"]))
    assert "ds1.root" in line and "--model" in line and "geometry=" not in line
    line = error_line(invoke(["info", other, "--geometry", "calogan"]))
    assert "--geometry calochallenge-ds1-photons" in line

    line = error_line(invoke(["calibrate", tmp_path, "--out", tmp_path / "o.root"]))
    assert str(tmp_path) in line and "is a directory" in line and "no such file" not in line
    assert not (tmp_path / "o.root").exists()


# ---------------------------------------------------------------- calinfer cathode


@pytest.fixture
def dijets(tmp_path) -> dict[str, Path]:
    from test_cli_cathode import lhco_frame

    rng = np.random.default_rng(5)

    def frame(mjj):
        n = len(mjj)
        return lhco_frame(mjj, rng.uniform(0.05, 0.15, n), rng.uniform(0.2, 0.4, n), rng.uniform(0.3, 0.9, n), 0)

    bkg = frame(2.8 + rng.exponential(0.45, 3000))
    files = {"bkg": tmp_path / "bkg.h5", "nocol": tmp_path / "nocol.h5", "key": tmp_path / "key.h5"}
    bkg.to_hdf(files["bkg"], key="df", mode="w")
    bkg.drop(columns=["mj1"]).to_hdf(files["nocol"], key="df", mode="w")
    bkg.to_hdf(files["key"], key="events", mode="w")
    files["sig"] = tmp_path / "sig.h5"
    frame(rng.normal(3.5, 0.05, 2000)).to_hdf(files["sig"], key="df", mode="w")
    files["far"] = tmp_path / "far.h5"
    frame(6.0 + rng.exponential(0.45, 500)).to_hdf(files["far"], key="df", mode="w")
    mjj = np.r_[rng.uniform(2.8, 3.3, 400), rng.uniform(3.7, 5.0, 400), rng.uniform(3.3, 3.7, 5)]
    files["few"] = tmp_path / "few.h5"  # 5 signal-region events
    frame(mjj).to_hdf(files["few"], key="df", mode="w")
    mjj = np.r_[rng.uniform(2.8, 3.3, 400), rng.uniform(3.7, 5.0, 400), rng.uniform(3.3, 3.7, 90)]
    files["some"] = tmp_path / "some.h5"  # 90 signal-region events
    frame(mjj).to_hdf(files["some"], key="df", mode="w")
    return files


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("nocol", [], ["nocol.h5", "mj1"]),
        ("key", [], ["key.h5", "'df'"]),
        ("missing", [], ["missing.h5", "no such file"]),
        ("bkg", ["--inject", "{bkg}", "--s-over-b", "-0.1"], ["--s-over-b", "cannot be negative"]),
        ("bkg", ["--n-flows", "3"], ["--n-flows", "even", "--no-cross-fit"]),
        ("far", [], ["far.h5", "none of the 500 events", "m_jj range [2.8, 5) TeV", "6-"]),
        ("few", ["--folds", "2"], ["few.h5", "5 events in the signal region", "at least 40"]),
        ("bkg", ["--baselines", "idealized"], ["--reference"]),
        ("bkg", ["--latent", "--no-cross-fit"], ["--latent", "--cross-fit"]),
    ],
)
def test_cathode_refuses_bad_setups_before_training(tmp_path, dijets, case, extra, expected, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the search must not start")

    monkeypatch.setattr("calinfer.resonant.search.run_search", never)
    data = dijets.get(case, tmp_path / "missing.h5")
    before = snapshot(tmp_path)
    args = ["cathode", data, *[e.format(bkg=dijets["bkg"]) for e in extra], "--out", tmp_path / "out"]
    line = error_line(invoke(args))
    for text in expected:
        assert text in line
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


class _Stop(Exception):
    """Raised in place of the search: the checks before it have run."""


@pytest.mark.parametrize(
    ("case", "extra", "expected"),
    [
        ("bkg", ["--s-over-b", "0.1"], "--s-over-b has no effect without --inject"),
        ("bkg", ["--inject", "{sig}", "--s-over-b", "1.5"], "--s-over-b 1.5 is unphysical"),
        ("some", ["--folds", "2"], "keeps only about 0.9 background events"),
    ],
)
def test_cathode_warns_about_degenerate_setups(tmp_path, dijets, case, extra, expected, monkeypatch):
    def stop(*args, **kwargs):
        raise _Stop("stopped before training")

    monkeypatch.setattr("calinfer.resonant.search.run_search", stop)
    args = ["cathode", dijets[case], *[e.format(sig=dijets["sig"]) for e in extra], "--out", tmp_path / "out"]
    result = invoke(args)
    assert "stopped before training" in error_line(result)
    assert any(expected in w for w in warnings_of(result)), result.stderr
    assert not (tmp_path / "out").exists()  # the output directory made for the run is removed again


# ---------------------------------------------------------------- Ctrl-C with local worker processes


def _worker_pid() -> int:
    return os.getpid()


def test_ctrl_c_stops_local_workers_quietly():
    import concurrent.futures
    import multiprocessing
    import multiprocessing.forkserver

    from calinfer.distributed.cli import _interrupt_stops_workers

    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no forkserver on this platform")
    multiprocessing.forkserver._forkserver._stop()  # one started by an earlier test did not ignore SIGINT
    context = multiprocessing.get_context("forkserver")
    with pytest.raises(KeyboardInterrupt), _interrupt_stops_workers(jobs=2):
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context)
        pid = pool.submit(_worker_pid).result()
        os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to every process of the group
        assert pool.submit(_worker_pid).result() == pid  # the worker ignored it (no traceback, still alive)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # interrupted at once by the handler
    pool.shutdown(wait=True, cancel_futures=True)
    assert not multiprocessing.active_children()
