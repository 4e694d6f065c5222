"""Two-step normalizing-flow surrogate of calorimeter showers with an exact likelihood.

``p(x | E) = p_I(E~_1..E~_L | E) * p_II(shape | E~, E) * |Jacobians|`` (CaloFlow's factorisation,
Krause & Shih, arXiv:2106.05285), with the preprocessing of :mod:`calinfer.preprocessing`:

* flow I (:attr:`ShowerSurrogate.layer_flow`): density of the standardized ``log(E~_l / E)``
  given the standardized ``log E``; small and fast, it is what calibration evaluates;
* flow II (:attr:`ShowerSurrogate.voxel_flow`): density of the standardized per-layer
  log-ratios given ``log E`` and flow I's variables.

``log_prob(..., part="full")`` returns ``log p(x~ | E)``, the log density (in GeV^-n_voxels) of
the dequantized voxels ``x~ = x + delta/2`` with every Jacobian term included, ``part="layers"``
the log density (GeV^-L) of the dequantized layer energies ``E~_l = E_l + n_l delta/2`` and
``part="voxels"`` the conditional log density of the voxels given those layer energies; the
two parts add up to the full one.

Sampling draws ``x~`` from the model and records it as the read-out would
(:func:`calinfer.preprocessing.quantize`): below the dequantization width or the training showers'
read-out threshold a voxel is zero, above it the recorded energy is drawn within its cell.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from calinfer.errors import InputError, ModelError
from calinfer.flows import ConditionalFlow, FlowConfig
from calinfer.geometry import Geometry, Layer, get_geometry
from calinfer.preprocessing import ShowerPreprocessing
from calinfer.showers import Showers

__all__ = [
    "DEFAULT_LAYER_FLOW",
    "DEFAULT_VOXEL_FLOW",
    "ShowerSurrogate",
    "SurrogateEnsemble",
    "default_device",
    "default_model_path",
    "load_default",
    "load_model",
    "model_path",
]

DEFAULT_LAYER_FLOW: dict = {
    "kind": "autoregressive", "n_blocks": 4, "hidden": 32, "n_res_blocks": 1, "n_bins": 8,
    "tail_bound": 5.0, "activation": "silu",
}
DEFAULT_VOXEL_FLOW: dict = {
    "kind": "coupling", "n_blocks": 8, "hidden": 128, "n_res_blocks": 1, "n_bins": 8,
    "tail_bound": 5.0, "activation": "silu",
}

FORMAT = "calinfer-surrogate"
ENSEMBLE_FORMAT = "calinfer-surrogate-ensemble"
FORMAT_VERSION = 1
CONFIG_FILE = "surrogate.json"
WEIGHTS_FILE = "weights.pt"
ENSEMBLE_FILE = "ensemble.json"
_PARTS = ("full", "layers", "voxels")


def default_device() -> torch.device:
    """The GPU when there is one, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _library_versions() -> dict[str, str]:
    import normflows

    from calinfer import __version__

    return {
        "calinfer": __version__,
        "torch": torch.__version__,
        "normflows": normflows.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _geometry_record(geometry: Geometry) -> dict:
    return {"id": geometry.id, "name": geometry.name, "description": geometry.description,
            "layers": [layer.to_dict() for layer in geometry.layers]}


def _geometry_from_record(record: dict) -> Geometry:
    """Rebuild the geometry a checkpoint was made for (a preset when the id is known)."""
    try:
        return get_geometry(record["id"])
    except InputError:
        pass
    layers = []
    for d in record["layers"]:
        layers.append(Layer(
            name=d["name"], shape=tuple(d["shape"]), kind=d["kind"],
            cell_size_mm=None if d["cell_size_mm"] is None else tuple(d["cell_size_mm"]),
            r_edges_mm=None if d["r_edges_mm"] is None else tuple(d["r_edges_mm"]),
            depth_mm=None if d["depth_mm"] is None else tuple(d["depth_mm"]),
        ))
    geometry = Geometry(name=record["name"], layers=tuple(layers), description=record.get("description", ""))
    if geometry.id != record["id"]:
        raise ValueError(f"geometry layout does not match its id {record['id']!r}")
    return geometry


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` onto ``target`` (replacing an old one) in two renames."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "x")
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old)


def _pairs(n: int, energies: float | np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Expand ``energies`` against ``n`` showers: (shower index per pair, energy per pair, result shape)."""
    e = np.asarray(energies, dtype=np.float64)
    if e.ndim == 0:
        e = np.full(n, float(e))
    if e.ndim == 1:
        if len(e) != n:
            raise InputError(f"{len(e)} energies for {n} showers; give shape (N,), (1, G) or (N, G)")
        idx, flat, shape = np.arange(n), e, (n,)
    elif e.ndim == 2:
        if e.shape[0] not in (1, n):
            raise InputError(f"energy grid of shape {e.shape} for {n} showers; give shape (1, G) or ({n}, G)")
        grid = np.array(np.broadcast_to(e, (n, e.shape[1])))
        idx, flat, shape = np.repeat(np.arange(n), e.shape[1]), grid.reshape(-1), (n, e.shape[1])
    else:
        raise InputError(f"energies must have shape (N,), (1, G) or (N, G), got {e.shape}")
    if not np.all(np.isfinite(flat) & (flat > 0)):
        raise InputError("incident energies must be finite and positive (GeV)")
    return idx, flat, shape


class ShowerSurrogate:
    """A trained (or freshly initialised) two-step flow surrogate for one geometry.

    ``energy_range`` is the incident-energy range (GeV) of the training data; outside it the
    density is an extrapolation. Build one with :meth:`create` (fits the preprocessing on training showers) and train it
    with :func:`calinfer.training.train_surrogate`, or load one with :meth:`load` /
    :func:`load_default`. Weights live on the CPU in float32; evaluation copies them to the
    requested device and dtype. A ``layers_only`` model has no usable flow II: it gives the layer
    likelihood and layer energies only and refuses the voxel density and shower sampling.
    """

    def __init__(
        self,
        geometry: Geometry,
        preprocessing: ShowerPreprocessing,
        layer_flow: ConditionalFlow,
        voxel_flow: ConditionalFlow,
        *,
        provenance: dict | None = None,
        training: dict | None = None,
        energy_range: tuple[float, float] | None = None,
        layers_only: bool = False,
    ) -> None:
        if preprocessing.n_voxels != geometry.n_voxels or preprocessing.n_layers != geometry.n_layers:
            raise ModelError(f"preprocessing is for {preprocessing.n_voxels} voxels, geometry {geometry.id} has "
                             f"{geometry.n_voxels}")
        self.geometry = geometry
        self.preprocessing = preprocessing
        self.layer_flow = layer_flow.eval()
        self.voxel_flow = voxel_flow.eval()
        self._converted: dict[tuple[torch.dtype, torch.device], tuple] = {}  # (version, flow I, flow II)
        self.provenance = dict(provenance or {})
        self.training = dict(training or {})
        self.energy_range = None if energy_range is None else (float(energy_range[0]), float(energy_range[1]))
        self.layers_only = bool(layers_only)

    @classmethod
    def create(
        cls,
        geometry: Geometry | str,
        voxels: np.ndarray,
        energies: np.ndarray,
        *,
        layer_flow: dict | None = None,
        voxel_flow: dict | None = None,
        dequantization_width: float | None = None,
        gaussianize: bool = True,
        voxel_context: str = "incident",
        seed: int = 0,
        provenance: dict | None = None,
    ) -> ShowerSurrogate:
        """An untrained surrogate whose preprocessing is fitted on ``voxels`` (N, n) and ``energies`` (N,), GeV.

        ``layer_flow`` / ``voxel_flow`` override entries of :data:`DEFAULT_LAYER_FLOW` /
        :data:`DEFAULT_VOXEL_FLOW` (see :class:`calinfer.flows.FlowConfig`); ``dequantization_width``
        (GeV) defaults to the smallest non-zero voxel energy rounded down to a power of ten;
        ``gaussianize`` maps flow II's coordinates through their fitted marginal quantiles first
        (:class:`calinfer.preprocessing.MarginalGaussianize`); ``voxel_context="layers"`` or ``"estimated"``
        condition flow II on the layer energies only
        (:attr:`calinfer.preprocessing.ShowerPreprocessing.voxel_context`).
        """
        geometry = get_geometry(geometry)
        geometry.check_voxel_count(np.shape(voxels)[1], what="training showers")
        pre = ShowerPreprocessing.fit(geometry, voxels, energies, dequantization_width=dequantization_width,
                                      gaussianize=gaussianize, voxel_context=voxel_context, seed=seed)
        n_l = geometry.n_layers
        cfg1 = FlowConfig(dim=n_l, context_dim=1, seed=seed, **{**DEFAULT_LAYER_FLOW, **(layer_flow or {})})
        cfg2 = FlowConfig(dim=geometry.n_voxels - n_l, context_dim=pre.voxel_context_dim, seed=seed + 1,
                          **{**DEFAULT_VOXEL_FLOW, **(voxel_flow or {})})
        e = np.asarray(energies, dtype=np.float64)
        return cls(geometry, pre, ConditionalFlow(cfg1), ConditionalFlow(cfg2), provenance=provenance,
                   energy_range=(float(e.min()), float(e.max())))

    @property
    def voxel_density_depends_on_energy(self) -> bool:
        """Whether ``log_prob(part="voxels")`` depends on the incident energy (``voxel_context="incident"``)."""
        return self.preprocessing.voxel_context == "incident"

    # --- inputs ----------------------------------------------------------------------------
    def _voxels(self, showers: Showers | np.ndarray) -> tuple[np.ndarray, str, int]:
        if isinstance(showers, Showers):
            self.geometry.check(showers.geometry, what=showers.source)
            vox, source, start = showers.voxels, showers.source, showers.entry_start
        else:
            vox, source, start = np.asarray(showers), "<array>", 0
            if vox.ndim != 2:
                raise InputError(f"voxels must have shape (N, {self.geometry.n_voxels}), got {vox.shape}")
            self.geometry.check_voxel_count(vox.shape[1], what="voxel array")
        bad = ~np.all(np.isfinite(vox) & (vox >= 0), axis=1)
        if np.any(bad):
            rows = np.flatnonzero(bad)[:5] + start
            raise InputError(
                f"{source}: entries {', '.join(map(str, rows))}{' ...' if bad.sum() > 5 else ''} have negative or "
                "non-finite voxel energies; the surrogate density is defined for voxels >= 0 GeV "
                "(clip them when reading, e.g. calinfer.io.read_showers(..., clip_negative=...))"
            )
        return vox, source, start

    @staticmethod
    def _device(device: str | torch.device | None) -> torch.device:
        return default_device() if device is None else torch.device(device)

    def _flows(self, dtype: torch.dtype, device: torch.device) -> tuple[ConditionalFlow, ConditionalFlow]:
        """The flows in ``dtype`` on ``device``: the originals for float32 on the CPU, else a converted copy cached
        until the original parameters change (training updates them in place, which bumps their version)."""
        if dtype == torch.float32 and device.type == "cpu":
            return self.layer_flow, self.voxel_flow
        version = tuple(p._version for flow in (self.layer_flow, self.voxel_flow) for p in flow.parameters())
        cached = self._converted.get((dtype, device))
        if cached is None or cached[0] != version:
            flows = (copy.deepcopy(self.layer_flow).to(device, dtype), copy.deepcopy(self.voxel_flow).to(device, dtype))
            cached = self._converted[(dtype, device)] = (version, *flows)
        return cached[1], cached[2]

    # --- densities -------------------------------------------------------------------------
    def _layers_term(self, flow1: ConditionalFlow, layer_t: torch.Tensor, e_t: torch.Tensor):
        """(log p of the dequantized layer energies, flow-I variables, context) for pairs."""
        pre = self.preprocessing
        y1, ld = pre.layers_forward(layer_t, e_t)
        ctx = pre.context(e_t)
        return flow1.log_prob(y1, ctx) + ld, y1, ctx

    def log_prob_layers(
        self,
        layer_energies: np.ndarray,
        energies: float | np.ndarray,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Log density (GeV^-L) of layer energies ``(N, L)`` (sums of the recorded voxels, GeV) given ``E``.

        ``energies``: ``(N,)`` gives ``(N,)``; ``(1, G)`` or ``(N, G)`` gives ``(N, G)``. The
        density is that of ``E~_l = E_l + n_l delta / 2`` (see the module docstring).
        """
        layers = np.asarray(layer_energies, dtype=np.float64)
        if layers.ndim != 2 or layers.shape[1] != self.geometry.n_layers:
            raise InputError(f"layer energies must have shape (N, {self.geometry.n_layers}), got {layers.shape}")
        if not np.all(np.isfinite(layers) & (layers >= 0)):
            raise InputError("layer energies must be finite and >= 0 GeV")
        idx, e, shape = _pairs(len(layers), energies)
        dev = self._device(device)
        batch = batch_size or (1 << 17)
        flow1, _ = self._flows(dtype, dev)
        out = np.empty(len(idx))
        with torch.inference_mode():
            for a in range(0, len(idx), batch):
                sl = slice(a, a + batch)
                layer_t = self.preprocessing.dequantized_layer_energies(
                    torch.as_tensor(layers[idx[sl]], dtype=dtype, device=dev))
                e_t = torch.as_tensor(e[sl], dtype=dtype, device=dev)
                lp, _, _ = self._layers_term(flow1, layer_t, e_t)
                out[sl] = lp.double().cpu().numpy()
        return out.reshape(shape)

    def log_prob(
        self,
        showers: Showers | np.ndarray,
        energies: float | np.ndarray,
        *,
        part: str = "full",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Log density of showers (``Showers`` or voxels ``(N, n)`` in GeV) given incident energies (GeV).

        ``energies``: ``(N,)`` pairs shower ``i`` with ``energies[i]`` and returns ``(N,)``;
        ``(1, G)`` or ``(N, G)`` evaluates every shower at every energy of its row and returns
        ``(N, G)`` float64. ``part`` is ``"full"`` (``log p(x~ | E)``, GeV^-n), ``"layers"`` or
        ``"voxels"`` (see the module docstring). Work is done in batches of ``batch_size``
        (shower, energy) pairs on ``device`` (default: GPU when available).
        """
        if part not in _PARTS:
            raise InputError(f"part must be one of {_PARTS}, not {part!r}")
        if part != "layers":
            self._require_voxel_flow(f'log_prob(part="{part}")')
        vox, _, _ = self._voxels(showers)
        if part == "layers":
            return self.log_prob_layers(self.geometry.layer_energies(vox.astype(np.float64)), energies,
                                        dtype=dtype, device=device, batch_size=batch_size)
        idx, e, shape = _pairs(len(vox), energies)
        dev = self._device(device)
        batch = batch_size or (1 << 15 if dev.type == "cuda" else 1 << 12)
        flow1, flow2 = self._flows(dtype, dev)
        pre = self.preprocessing
        out = np.empty(len(idx))
        per_shower = max(1, len(idx) // max(1, len(vox)))
        showers_per_chunk = max(1, batch // per_shower)
        with torch.inference_mode():
            for s0 in range(0, len(vox), showers_per_chunk):
                s1 = min(len(vox), s0 + showers_per_chunk)
                layer_t, u_t, ld_t = pre.shower_forward(torch.as_tensor(vox[s0:s1], dtype=dtype, device=dev))
                p0, p1 = np.searchsorted(idx, [s0, s1])
                for a in range(p0, p1, batch):
                    sl = slice(a, min(p1, a + batch))
                    local = torch.as_tensor(idx[sl] - s0, device=dev)
                    e_t = torch.as_tensor(e[sl], dtype=dtype, device=dev)
                    lp1, y1, ctx = self._layers_term(flow1, layer_t[local], e_t)
                    lp2 = flow2.log_prob(u_t[local], pre.flow2_context(ctx, y1)) + ld_t[local]
                    lp = lp2 if part == "voxels" else lp1 + lp2
                    out[sl] = lp.double().cpu().numpy()
        return out.reshape(shape)

    def _require_voxel_flow(self, what: str) -> None:
        if self.layers_only:
            raise ModelError(f"{what}: this surrogate ({self.provenance.get('dataset', 'no dataset recorded')}) is a "
                             "layer-energy model without a trained voxel flow; use the layer likelihood "
                             "(part='layers', --likelihood layers) or a model with a trained flow II")

    # --- sampling --------------------------------------------------------------------------
    def _base_layers(self, n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.geometry.n_layers, generator=gen, dtype=torch.float32)

    def sample_layers(
        self, energies: np.ndarray, seed: int = 0, *, device: str | torch.device | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Draw layer energies ``(N, L)`` (GeV, recorded-voxel convention) for incident energies ``(N,)``.

        Uses the same draws as :meth:`sample` with the same seed, so its layer sums agree.
        """
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        _pairs(len(e), e)
        dev = self._device(device)
        flow1, _ = self._flows(torch.float32, dev)
        z = self._base_layers(len(e), seed)
        batch = batch_size or (1 << 17)
        out = np.empty((len(e), self.geometry.n_layers))
        sizes = self.preprocessing.layer_sizes * self.preprocessing.dequantization_width / 2
        with torch.inference_mode():
            for a in range(0, len(e), batch):
                e_t = torch.as_tensor(e[a:a + batch], dtype=torch.float32, device=dev)
                y1 = flow1.from_base(z[a:a + batch].to(dev), self.preprocessing.context(e_t))
                out[a:a + batch] = self.preprocessing.layers_inverse(y1, e_t).double().cpu().numpy() - sizes
        return out

    def sample(
        self, energies: np.ndarray, seed: int = 0, *, device: str | torch.device | None = None,
        batch_size: int | None = None,
    ) -> Showers:
        """Generate one shower per incident energy ``(N,)`` (GeV); voxels float32, >= 0, GeV.

        Draws are reproducible for a given ``seed`` and ``batch_size`` (default 4096 on the CPU).
        """
        self._require_voxel_flow("sample")
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        _pairs(len(e), e)
        dev = self._device(device)
        flow1, flow2 = self._flows(torch.float32, dev)
        pre = self.preprocessing
        z1 = self._base_layers(len(e), seed)
        gen2 = torch.Generator().manual_seed(seed + 1_000_003)
        gen3 = torch.Generator().manual_seed(seed + 2_000_003)
        batch = batch_size or (1 << 15 if dev.type == "cuda" else 1 << 12)
        out = np.empty((len(e), self.geometry.n_voxels), dtype=np.float32)
        with torch.inference_mode():
            for a in range(0, len(e), batch):
                e_t = torch.as_tensor(e[a:a + batch], dtype=torch.float32, device=dev)
                ctx = pre.context(e_t)
                y1 = flow1.from_base(z1[a:a + batch].to(dev), ctx)
                u = flow2.sample(pre.flow2_context(ctx, y1), gen2)
                x = pre.shower_inverse(pre.layers_inverse(y1, e_t), u, gen3)
                out[a:a + batch] = x.cpu().numpy()
        return Showers(voxels=out, geometry=self.geometry, incident_energy=e,
                       source=f"<surrogate sample, seed {seed}>")

    # --- checkpoints -----------------------------------------------------------------------
    def record(self) -> dict:
        """Everything but the weights: geometry, preprocessing, flow configs, provenance, versions."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "geometry": _geometry_record(self.geometry),
            "preprocessing": self.preprocessing.to_dict(),
            "flows": {"layers": self.layer_flow.config.to_dict(), "voxels": self.voxel_flow.config.to_dict()},
            "energy_range": self.energy_range,
            "layers_only": self.layers_only,
            "provenance": self.provenance,
            "training": self.training,
            "versions": _library_versions(),
        }

    def state_dict(self) -> dict:
        return {"layer_flow": self.layer_flow.state_dict(), "voxel_flow": self.voxel_flow.state_dict()}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``surrogate.json`` and ``weights.pt`` into ``directory``, replacing it as a whole."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)
        try:
            torch.save(self.state_dict(), tmp / WEIGHTS_FILE)
            record = self.record()
            record["weights_sha256"] = _sha256(tmp / WEIGHTS_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=1))
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike, geometry: Geometry | str | None = None) -> ShowerSurrogate:
        """Load a checkpoint written by :meth:`save`; with ``geometry``, refuse one made for another geometry.

        Raises :class:`~calinfer.errors.ModelError` for missing or corrupt checkpoints and
        :class:`~calinfer.errors.GeometryMismatchError` for a geometry mismatch.
        """
        path = Path(directory)
        cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise ModelError(f"{path}: no surrogate checkpoint here (need {CONFIG_FILE} and {WEIGHTS_FILE}); "
                             "train one with `calinfer train` or use calinfer.load_default()")
        try:
            record = json.loads(cfg_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{cfg_path}: unreadable checkpoint description ({err})") from err
        if record.get("format") != FORMAT or not isinstance(record.get("format_version"), int):
            raise ModelError(f"{cfg_path}: not a calinfer surrogate checkpoint")
        if record["format_version"] > FORMAT_VERSION:
            raise ModelError(f"{cfg_path}: checkpoint format {record['format_version']} is newer than this calinfer "
                             f"understands ({FORMAT_VERSION}); upgrade calinfer")
        if _sha256(w_path) != record.get("weights_sha256"):
            raise ModelError(f"{w_path}: weights do not match the checksum in {CONFIG_FILE}; the checkpoint is "
                             "corrupt or incomplete, retrain or copy it again")
        try:
            model_geometry = _geometry_from_record(record["geometry"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{cfg_path}: invalid geometry record ({err!r})") from err
        if geometry is not None:
            get_geometry(geometry).check(model_geometry, what=f"surrogate {path}")
        _check_versions(record.get("versions", {}), cfg_path)
        try:
            state = torch.load(w_path, map_location="cpu", weights_only=True)
            return cls.from_record(record, state["layer_flow"], state["voxel_flow"])
        except (RuntimeError, KeyError, TypeError, ValueError, OSError, EOFError) as err:
            raise ModelError(f"{path}: checkpoint description and weights do not fit together ({err!r})") from err

    @classmethod
    def from_record(cls, record: dict, layer_state: dict, voxel_state: dict) -> ShowerSurrogate:
        """Rebuild a surrogate from :meth:`record` and the two flows' state dicts."""
        flow1 = ConditionalFlow(FlowConfig.from_dict(record["flows"]["layers"]))
        flow2 = ConditionalFlow(FlowConfig.from_dict(record["flows"]["voxels"]))
        flow1.load_state_dict(layer_state)
        flow2.load_state_dict(voxel_state)
        return cls(_geometry_from_record(record["geometry"]), ShowerPreprocessing.from_dict(record["preprocessing"]),
                   flow1, flow2, provenance=record.get("provenance"), training=record.get("training"),
                   energy_range=record.get("energy_range"), layers_only=record.get("layers_only", False))


def _check_versions(recorded: dict, where: Path) -> None:
    """Warn when the checkpoint was written with another major.minor torch or normflows."""
    current = _library_versions()
    for lib in ("torch", "normflows"):
        old = recorded.get(lib)
        if old is not None and old.split(".")[:2] != current[lib].split(".")[:2]:
            warnings.warn(f"{where}: written with {lib} {old}, running {lib} {current[lib]}", stacklevel=3)


class SurrogateEnsemble:
    """Independently trained surrogates combined as an equal-weight mixture.

    ``log p = logsumexp_k log p_k - log K`` (computed in log space); sampling picks a member per shower.
    """

    def __init__(self, members: Sequence[ShowerSurrogate]) -> None:
        if not members:
            raise ModelError("an ensemble needs at least one member")
        self.members = list(members)
        self.geometry = self.members[0].geometry
        for k, m in enumerate(self.members[1:], start=1):
            self.geometry.check(m.geometry, what=f"ensemble member {k}")
        # incident energies (GeV) inside every member's training range
        ranges = [m.energy_range for m in self.members if m.energy_range is not None]
        self.energy_range = (max(r[0] for r in ranges), min(r[1] for r in ranges)) if ranges else None

    def __len__(self) -> int:
        return len(self.members)

    @property
    def voxel_density_depends_on_energy(self) -> bool:
        """Whether the mixture's voxel part depends on E: as soon as one member's does, or members disagree on the
        layer likelihood (a mixture of factorised members does not factorise)."""
        return len(self.members) > 1 or self.members[0].voxel_density_depends_on_energy

    def _combine(self, values: list[np.ndarray]) -> np.ndarray:
        stack = np.stack(values)
        top = np.max(stack, axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        return top + np.log(np.mean(np.exp(stack - top), axis=0))

    def log_prob(self, showers: Showers | np.ndarray, energies: float | np.ndarray, **kwargs) -> np.ndarray:
        """Mixture log density; same arguments and shapes as :meth:`ShowerSurrogate.log_prob`."""
        return self._combine([m.log_prob(showers, energies, **kwargs) for m in self.members])

    def log_prob_layers(self, layer_energies: np.ndarray, energies: float | np.ndarray, **kwargs) -> np.ndarray:
        """Mixture log density of layer energies; see :meth:`ShowerSurrogate.log_prob_layers`."""
        return self._combine([m.log_prob_layers(layer_energies, energies, **kwargs) for m in self.members])

    def _split(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(len(self.members), size=n)

    def sample(self, energies: np.ndarray, seed: int = 0, **kwargs) -> Showers:
        """One shower per energy, each from a member drawn uniformly (reproducible per seed)."""
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        which = self._split(len(e), seed)
        voxels = np.zeros((len(e), self.geometry.n_voxels), dtype=np.float32)
        for k, m in enumerate(self.members):
            sel = which == k
            if sel.any():
                voxels[sel] = m.sample(e[sel], seed=seed + 7919 * (k + 1), **kwargs).voxels
        return Showers(voxels=voxels, geometry=self.geometry, incident_energy=e,
                       source=f"<ensemble sample, seed {seed}>")

    def sample_layers(self, energies: np.ndarray, seed: int = 0, **kwargs) -> np.ndarray:
        """Layer energies ``(N, L)`` from the mixture (same member choice as :meth:`sample`)."""
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        which = self._split(len(e), seed)
        out = np.zeros((len(e), self.geometry.n_layers))
        for k, m in enumerate(self.members):
            sel = which == k
            if sel.any():
                out[sel] = m.sample_layers(e[sel], seed=seed + 7919 * (k + 1), **kwargs)
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write every member into ``member-K/`` plus ``ensemble.json``, replacing ``directory`` as a whole."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        os.chmod(tmp, 0o755)
        try:
            names = []
            for k, m in enumerate(self.members):
                names.append(f"member-{k}")
                m.save(tmp / names[-1])
            record = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "geometry": self.geometry.id,
                      "members": names}
            (tmp / ENSEMBLE_FILE).write_text(json.dumps(record, indent=1))
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike, geometry: Geometry | str | None = None) -> SurrogateEnsemble:
        """Load an ensemble written by :meth:`save` (errors as :meth:`ShowerSurrogate.load`)."""
        path = Path(directory)
        try:
            record = json.loads((path / ENSEMBLE_FILE).read_text())
            names = record["members"]
            ok = record.get("format") == ENSEMBLE_FORMAT and isinstance(names, list) and names
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ModelError(f"{path}: no readable surrogate ensemble here ({err})") from err
        if not ok:
            raise ModelError(f"{path / ENSEMBLE_FILE}: not a calinfer surrogate ensemble")
        return cls([ShowerSurrogate.load(path / name, geometry=geometry) for name in names])


def model_path(path_or_name: str | os.PathLike) -> Path:
    """The model directory ``path_or_name`` names: an existing directory, else the pretrained model of that name
    shipped in ``calinfer/models`` (``"default"``: photons, CaloGAN; ``"pions"``: charged pions,
    ``calochallenge-ds1-pions``, layer likelihood only); anything else is returned unchanged."""
    path = Path(path_or_name)
    if not path.is_dir() and path.name == str(path_or_name):
        shipped = default_model_path().parent / path.name
        if shipped.is_dir():
            return shipped
    return path


def load_model(path: str | os.PathLike, geometry: Geometry | str | None = None) -> ShowerSurrogate | SurrogateEnsemble:
    """Load a surrogate or an ensemble directory, whichever ``path`` holds; a bare name such as ``"pions"`` that
    is not a directory loads the shipped model of that name (:func:`model_path`)."""
    path = model_path(path)
    if (Path(path) / ENSEMBLE_FILE).is_file():
        return SurrogateEnsemble.load(path, geometry=geometry)
    return ShowerSurrogate.load(path, geometry=geometry)


def default_model_path() -> Path:
    """Where the pretrained default surrogate is installed (inside the package)."""
    return Path(str(resources.files("calinfer") / "models" / "default"))


def load_default(geometry: Geometry | str | None = None) -> ShowerSurrogate | SurrogateEnsemble:
    """The pretrained surrogate shipped with calinfer (CaloGAN geometry, photons 1-100 GeV)."""
    path = default_model_path()
    if not path.is_dir():
        raise ModelError(f"the pretrained default surrogate is not installed (expected at {path}); "
                         "reinstall calinfer or retrain it with analyses/train_default.py")
    return load_model(path, geometry=geometry)

