"""Maximum-likelihood training of a :class:`~calinfer.surrogate.ShowerSurrogate`.

The two flows have disjoint parameters and additive losses, so they are trained one after the
other: first flow I (layer energies, cheap, many epochs), then flow II (voxel shapes). Each phase
uses Adam with a cosine learning-rate decay whose progress is the larger of the step fraction and
the wall-time fraction (so a time-limited run still ends at a small learning rate), early
stopping on the validation loss (the best weights are kept), gradient-norm clipping and a NaN
guard (a non-finite loss skips the batch; non-finite weights are restored from the last good
epoch and the learning rate is halved; ``max_bad_batches`` bad batches in a row stop the run with a
:class:`~calinfer.errors.TrainingError` naming the cause). Every phase runs at least one (possibly
partial) epoch, and a flow whose validation NLL is not finite is never written. Dequantization
noise is redrawn for every batch; the validation set uses one fixed draw.

A checkpoint with everything needed to continue (weights, optimizer, schedule, generator state,
history, data fingerprint) is written atomically to ``work_dir`` after every epoch; rerunning with
``resume=True`` continues where the run stopped.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from calinfer.errors import InputError, TrainingError
from calinfer.flows import ConditionalFlow
from calinfer.preprocessing import dequantize
from calinfer.showers import Showers
from calinfer.surrogate import ShowerSurrogate, default_device

__all__ = ["TrainConfig", "data_fingerprint", "plot_loss_curves", "train_surrogate"]

log = logging.getLogger("calinfer.training")
CHECKPOINT_FILE = "checkpoint.pt"
_PHASES = ("layers", "voxels")


@dataclass
class TrainConfig:
    """Training options (flow II unless prefixed ``layer_``; times in minutes).

    ``max_bad_batches`` consecutive batches with a non-finite loss or gradient stop the training with a
    :class:`~calinfer.errors.TrainingError` that names the cause.

    ``max_minutes`` bounds the whole run (both phases, summed over resumes); flow I may use at
    most ``layer_time_fraction`` of it.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 5
    layer_epochs: int = 200
    layer_batch_size: int = 1024
    layer_lr: float = 3e-3
    layer_patience: int = 20
    layer_time_fraction: float = 0.15
    val_fraction: float = 0.1
    clip_grad: float = 5.0
    min_lr_fraction: float = 0.02
    max_bad_batches: int = 25
    max_minutes: float | None = None
    seed: int = 0
    device: str | None = None
    progress: bool = True


def data_fingerprint(voxels: np.ndarray, energies: np.ndarray) -> str:
    """SHA-256 of the training arrays (identifies the data a model was trained on)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(voxels, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(energies, dtype=np.float64).tobytes())
    return h.hexdigest()


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _Phase:
    """One flow's optimisation: state that goes into the checkpoint plus the epoch loop."""

    def __init__(self, name: str, flow: ConditionalFlow, epochs: int, batch_size: int, lr: float, patience: int,
                 cfg: TrainConfig, n_train: int) -> None:
        self.name, self.flow, self.cfg = name, flow, cfg
        self.epochs, self.batch_size, self.lr, self.patience = epochs, batch_size, lr, patience
        self.optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
        self.steps_per_epoch = max(1, math.ceil(n_train / batch_size))
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.lr_scale = 1.0
        self.best_val = math.inf
        self.best_state = copy.deepcopy(flow.state_dict())
        self.good_state = copy.deepcopy(flow.state_dict())
        self.bad_epochs = 0
        self.skipped = 0
        self.restored = 0
        self.history: dict[str, list[float]] = {"train": [], "val": [], "lr": []}
        self.stopped = ""

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("epoch", "step", "elapsed", "lr_scale", "best_val", "best_state",
                                               "good_state", "bad_epochs", "skipped", "restored", "history",
                                               "stopped")} | {"optimizer": self.optimizer.state_dict(),
                                                              "flow": self.flow.state_dict()}

    def load(self, state: dict) -> None:
        self.flow.load_state_dict(state["flow"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k in ("epoch", "step", "elapsed", "lr_scale", "best_val", "best_state", "good_state", "bad_epochs",
                  "skipped", "restored", "history", "stopped"):
            setattr(self, k, state[k])

    def _set_lr(self, budget_s: float | None) -> float:
        progress = self.step / (self.epochs * self.steps_per_epoch)
        if budget_s:
            progress = max(progress, self.elapsed / budget_s)
        floor = self.cfg.min_lr_fraction
        lr = self.lr * self.lr_scale * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _diagnose(self, x: torch.Tensor, ctx: torch.Tensor, n_bad: int) -> str:
        """The message for ``n_bad`` consecutive non-finite batches: which input or stage is at fault."""
        what = f"{self.name} flow: {n_bad} consecutive batches with a non-finite loss or gradient"
        if not torch.isfinite(x).all():
            cols = torch.nonzero(~torch.isfinite(x).all(dim=0)).view(-1)[:5].tolist()
            return (f"{what}; the preprocessing gives non-finite flow inputs (coordinates {cols}): the training "
                    "showers contain values the preprocessing cannot map (check the dequantization width and for "
                    "voxels that underflow)")
        if not torch.isfinite(ctx).all():
            return f"{what}; the context (incident and layer energies) is non-finite: check the incident energies"
        return (f"{what} although the inputs are finite (largest |input| {float(x.abs().max()):.3g}): the flow "
                "diverged; lower the learning rate or the gradient clipping threshold")

    def _val_loss(self, val: tuple[torch.Tensor, torch.Tensor]) -> float:
        self.flow.eval()
        total = 0.0
        with torch.no_grad():
            for a in range(0, len(val[0]), 8192):
                total += float(-self.flow.log_prob(val[0][a:a + 8192], val[1][a:a + 8192]).sum())
        return total / len(val[0])

    def run(self, batch_fn: Callable, n_train: int, val: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator,
            budget_s: float | None, save: Callable[[], None]) -> None:
        """Train until the epochs, the patience or the time budget run out (resumes from the loaded state)."""
        cfg = self.cfg
        while not self.stopped:
            if self.epoch >= self.epochs:
                self.stopped = "epochs"
                break
            if budget_s is not None and self.elapsed >= budget_s and self.epoch > 0:  # one epoch at least
                self.stopped = "time"
                break
            self.flow.train()
            order = torch.randperm(n_train, generator=gen)
            total, count, t0 = 0.0, 0, time.monotonic()
            elapsed0 = self.elapsed
            bar = tqdm(range(0, n_train, self.batch_size), desc=f"{self.name} epoch {self.epoch + 1}",
                       disable=not cfg.progress, leave=False, mininterval=2.0)
            bad_run = 0
            for a in bar:
                lr = self._set_lr(budget_s)
                x, ctx = batch_fn(order[a:a + self.batch_size], gen)
                loss = -self.flow.log_prob(x, ctx).mean()
                finite = bool(torch.isfinite(loss))
                if finite:
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), cfg.clip_grad)
                    finite = bool(torch.isfinite(norm))
                if not finite:
                    self.skipped += 1
                    bad_run += 1
                    if bad_run >= cfg.max_bad_batches:
                        raise TrainingError(self._diagnose(x, ctx, bad_run))
                    continue
                bad_run = 0
                self.optimizer.step()
                self.step += 1
                total += float(loss.detach()) * len(x)
                count += len(x)
                self.elapsed = elapsed0 + time.monotonic() - t0
                bar.set_postfix(loss=f"{total / count:.3f}", lr=f"{lr:.1e}", refresh=False)
                if budget_s is not None and self.elapsed >= budget_s:
                    break
            bar.close()
            if not all(torch.isfinite(p).all() for p in self.flow.parameters()):
                self.flow.load_state_dict(self.good_state)
                self.optimizer.state.clear()
                self.lr_scale *= 0.5
                self.restored += 1
                log.warning("%s: non-finite weights after epoch %d; restored the last good epoch, lr halved",
                            self.name, self.epoch + 1)
            val_loss = self._val_loss(val)
            self.epoch += 1
            self.history["train"].append(total / count if count else math.nan)
            self.history["val"].append(val_loss)
            self.history["lr"].append(lr)
            if math.isfinite(val_loss):
                self.good_state = copy.deepcopy(self.flow.state_dict())
            if val_loss < self.best_val:
                self.best_val, self.bad_epochs = val_loss, 0
                self.best_state = copy.deepcopy(self.flow.state_dict())
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.patience:
                    self.stopped = "early stopping"
            log.info("%s epoch %d: train %.4f val %.4f (best %.4f) lr %.2e, %.0f s", self.name, self.epoch,
                     self.history["train"][-1], val_loss, self.best_val, lr, self.elapsed)
            save()
        self.flow.load_state_dict(self.best_state)
        self.flow.eval()


def _nonfinite_hint(val: tuple[torch.Tensor, torch.Tensor]) -> str:
    """Why a validation loss may be non-finite: non-finite inputs, or a flow that diverged."""
    bad = ~torch.isfinite(val[0]).all(dim=1) | ~torch.isfinite(val[1]).all(dim=1)
    if bad.any():
        return (f"{int(bad.sum())} of {len(bad)} validation showers have non-finite flow inputs: they hold values "
                "outside what the preprocessing fitted on the training showers maps")
    return "The validation inputs are finite: the flow diverged; lower the learning rate"


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_surrogate(
    showers: Showers,
    out_dir: str | os.PathLike,
    *,
    config: TrainConfig | None = None,
    val_showers: Showers | None = None,
    layer_flow: dict | None = None,
    voxel_flow: dict | None = None,
    dequantization_width: float | None = None,
    gaussianize: bool = True,
    voxel_context: str = "incident",
    work_dir: str | os.PathLike | None = None,
    resume: bool = False,
    provenance: dict | None = None,
) -> ShowerSurrogate:
    """Train a surrogate on ``showers`` (incident energies required) and save it to ``out_dir``.

    Without ``val_showers`` a ``val_fraction`` of ``showers`` is held out. Checkpoints go to
    ``work_dir`` (default ``<out_dir>.work``); ``resume=True`` continues from its checkpoint.
    ``provenance`` (dataset name, metadata, seed, ...) is stored in the model together with the
    data fingerprint and the split. Returns the trained surrogate (best validation weights).
    """
    cfg = config or TrainConfig()
    if showers.incident_energy is None:
        raise InputError(f"{showers.source}: training needs the incident energies of the showers")
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / CHECKPOINT_FILE
    device = torch.device(cfg.device) if cfg.device else default_device()

    if val_showers is None:
        train_idx, val_idx = _split(len(showers), cfg.val_fraction, cfg.seed)
        train, val = showers[train_idx], showers[val_idx]
    else:
        showers.geometry.check(val_showers.geometry, what=val_showers.source)
        if val_showers.incident_energy is None:
            raise InputError(f"{val_showers.source}: validation needs the incident energies of the showers")
        train, val = showers, val_showers
    fingerprint = data_fingerprint(showers.voxels, showers.incident_energy)

    state = None
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != fingerprint:
            raise InputError(f"{ckpt_path}: the checkpoint was trained on other data (fingerprint differs); "
                             "resume with the same data or start without --resume")
        surrogate = ShowerSurrogate.from_record(state["record"], state["phases"]["layers"]["flow"],
                                                state["phases"]["voxels"]["flow"])
        log.info("resuming from %s", ckpt_path)
    else:
        if resume:
            log.info("no checkpoint in %s; starting from scratch", work)
        surrogate = ShowerSurrogate.create(
            showers.geometry, train.voxels, train.incident_energy, layer_flow=layer_flow, voxel_flow=voxel_flow,
            dequantization_width=dequantization_width, gaussianize=gaussianize, voxel_context=voxel_context,
            seed=cfg.seed, provenance=provenance)
    pre = surrogate.preprocessing
    flow1, flow2 = surrogate.layer_flow.to(device), surrogate.voxel_flow.to(device)

    vox_t = torch.as_tensor(np.asarray(train.voxels, dtype=np.float32), device=device)
    e_t = torch.as_tensor(np.asarray(train.incident_energy, dtype=np.float32), device=device)
    slices = pre.layer_slices

    def layer_batch(x: torch.Tensor, e: torch.Tensor, gen: torch.Generator):
        xt, _ = dequantize(x, pre.dequantization_width, gen)
        sums = torch.stack([xt[:, a:b].sum(dim=1) for a, b in slices], dim=1)
        y1, _ = pre.layers_forward(sums, e)
        return y1, pre.context(e)

    def voxel_batch(x: torch.Tensor, e: torch.Tensor, gen: torch.Generator):
        layer_t, u, _ = pre.shower_forward(x, gen)
        y1, _ = pre.layers_forward(layer_t, e)
        return u, pre.flow2_context(pre.context(e), y1)

    # one fixed dequantization draw for validation
    val_gen = torch.Generator().manual_seed(cfg.seed + 12345)
    val_vox = torch.as_tensor(np.asarray(val.voxels, dtype=np.float32))
    val_e = torch.as_tensor(np.asarray(val.incident_energy, dtype=np.float32))
    val_inputs = {}
    for name, fn in (("layers", layer_batch), ("voxels", voxel_batch)):
        parts = [fn(val_vox[a:a + 8192], val_e[a:a + 8192], val_gen) for a in range(0, len(val_vox), 8192)]
        val_inputs[name] = (torch.cat([p[0] for p in parts]).to(device), torch.cat([p[1] for p in parts]).to(device))

    n_train = len(train)
    phases = {
        "layers": _Phase("layers", flow1, cfg.layer_epochs, cfg.layer_batch_size, cfg.layer_lr, cfg.layer_patience,
                         cfg, n_train),
        "voxels": _Phase("voxels", flow2, cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience, cfg, n_train),
    }
    gen = torch.Generator().manual_seed(cfg.seed)
    if state is not None:
        for name in _PHASES:
            phases[name].load(state["phases"][name])
            if phases[name].stopped in ("epochs", "time"):  # limits may have been raised for this run
                phases[name].stopped = ""
        gen.set_state(state["generator"])

    def save() -> None:
        _atomic_torch_save({
            "record": surrogate.record(),
            "fingerprint": fingerprint,
            "config": asdict(cfg),
            "generator": gen.get_state(),
            "phases": {name: p.state() for name, p in phases.items()},
        }, ckpt_path)

    budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
    for name, fn in (("layers", layer_batch), ("voxels", voxel_batch)):
        phase = phases[name]
        if name == "layers":
            phase_budget = None if budget is None else cfg.layer_time_fraction * budget
        else:
            phase_budget = None if budget is None else max(0.0, budget - phases["layers"].elapsed)

        def batch_fn(idx: torch.Tensor, g: torch.Generator, fn=fn):
            idx = idx.to(device)
            return fn(vox_t[idx], e_t[idx], g)

        phase.run(batch_fn, n_train, val_inputs[name], gen, phase_budget, save)
        if not math.isfinite(phase.best_val):
            raise TrainingError(
                f"{name} flow: the validation NLL is not finite after {phase.epoch} epochs (last "
                f"{phase.history['val'][-1] if phase.history['val'] else math.nan}); no model was written to {out}. "
                f"{_nonfinite_hint(val_inputs[name])}")

    surrogate.layer_flow, surrogate.voxel_flow = flow1.cpu().eval(), flow2.cpu().eval()
    surrogate.provenance = {
        **(provenance or {}),
        **surrogate.provenance,
        "n_train": n_train,
        "n_val": len(val),
        "data_sha256": fingerprint,
        "validation": "given" if val_showers is not None else f"random {cfg.val_fraction:g} split, seed {cfg.seed}",
    }
    surrogate.training = {
        "config": asdict(cfg),
        "device": str(device),
        **{name: {"epochs": p.epoch, "best_val_nll": p.best_val, "stopped": p.stopped, "seconds": p.elapsed,
                  "skipped_batches": p.skipped, "restored_epochs": p.restored, "history": p.history}
           for name, p in phases.items()},
    }
    save()
    surrogate.save(out)
    plot_loss_curves(surrogate.training, out / "loss_curves.png")
    return surrogate


def plot_loss_curves(training: dict, path: str | os.PathLike) -> Path:
    """Train and validation loss per epoch of both flows (negative log-likelihood in flow variables)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, name, title in zip(axes, _PHASES, ("flow I: layer energies", "flow II: voxel shapes"), strict=True):
        hist = training[name]["history"]
        epochs = np.arange(1, len(hist["train"]) + 1)
        ax.plot(epochs, hist["train"], marker="o", markersize=3, label="train")
        ax.plot(epochs, hist["val"], marker="o", markersize=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NLL per shower (flow variables)")
        ax.set_title(title)
        ax.legend()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    return path
