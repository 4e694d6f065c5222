"""``calinfer train``: train a two-step flow surrogate on a shower file."""

from __future__ import annotations

import click

from calinfer.cli.outputs import overwrite_option

__all__ = ["train"]


@click.command()
@click.option("--data", "data", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training showers (.root or .h5) with incident energies.")
@click.option("--geometry", default="calogan", show_default=True, help="Geometry name or id of the showers.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (replaced as a whole at the end).")
@click.option("--val-data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Separate validation showers (default: hold out --val-fraction of --data).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True, help="Maximum epochs of flow II (voxels).")
@click.option("--layer-epochs", type=int, default=200, show_default=True, help="Maximum epochs of flow I (layers).")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Initial learning rate of flow II.")
@click.option("--max-minutes", type=float, default=None, help="Wall-time budget of the whole training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Checkpoint directory (default: OUT.work).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in the work directory.")
@click.option("--voxel-blocks", type=int, default=None, help="Spline blocks of flow II.")
@click.option("--voxel-hidden", type=int, default=None, help="Hidden width of flow II.")
@click.option("--clip-negative", type=float, default=0.0, show_default=True,
              help="Set voxel energies in [-X, 0) GeV to zero (the surrogate needs voxels >= 0).")
@click.option("--voxel-context", type=click.Choice(["estimated", "incident", "layers"]), default="estimated",
              show_default=True, help="Flow II's context: the layer energies and the energy estimated from their sum "
              "(estimated: the full likelihood in E is the layer likelihood plus a constant), log E_inc and the "
              "layer energies (incident), or the layer energies alone (layers).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
def train(data: str, geometry: str, out: str, val_data: str | None, val_fraction: float, epochs: int,
          layer_epochs: int, batch_size: int, lr: float, max_minutes: float | None, seed: int, device: str | None,
          threads: int | None, work_dir: str | None, resume: bool, voxel_blocks: int | None,
          voxel_hidden: int | None, clip_negative: float, voxel_context: str, quiet: bool, overwrite: bool) -> None:
    """Train a surrogate (flow I: layer energies, flow II: voxel shapes) and write it to OUT."""
    import logging

    import torch

    from calinfer.io import read_metadata, read_showers
    from calinfer.io.atomic import check_output_dir, reserve_outputs
    from calinfer.training import TrainConfig, train_surrogate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if threads:
        torch.set_num_threads(threads)
    check_output_dir(out, overwrite=overwrite)
    showers = read_showers(data, geometry, progress=not quiet, clip_negative=clip_negative)
    val = read_showers(val_data, geometry, progress=not quiet, clip_negative=clip_negative) if val_data else None
    voxel_flow = {k: v for k, v in (("n_blocks", voxel_blocks), ("hidden", voxel_hidden)) if v is not None}
    config = TrainConfig(epochs=epochs, layer_epochs=layer_epochs, batch_size=batch_size, lr=lr,
                         max_minutes=max_minutes, seed=seed, device=device, val_fraction=val_fraction,
                         progress=not quiet)
    provenance = {"dataset": str(data), "metadata": read_metadata(data), "n_showers": len(showers),
                  "validation_dataset": str(val_data) if val_data else None, "seed": seed}
    with reserve_outputs(directories=[out], overwrite=overwrite):
        model = train_surrogate(showers, out, config=config, val_showers=val, voxel_flow=voxel_flow or None,
                                voxel_context=voxel_context, work_dir=work_dir, resume=resume, provenance=provenance)
    t = model.training
    click.echo(f"wrote {out}: flow I val NLL {t['layers']['best_val_nll']:.4f} ({t['layers']['epochs']} epochs, "
               f"{t['layers']['stopped']}), flow II val NLL {t['voxels']['best_val_nll']:.3f} "
               f"({t['voxels']['epochs']} epochs, {t['voxels']['stopped']})")
