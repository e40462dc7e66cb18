"""``flowmatch autoencoder train``: the small autoencoder of latent flow matching (``data.latent``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Add the ``autoencoder`` command (with its ``train`` subcommand) to ``sub``."""
    a = sub.add_parser(
        "autoencoder", help="train a small autoencoder to flow in its codes (data.latent=DIR)"
    )
    asub = a.add_subparsers(dest="ae_command", required=True)
    t = asub.add_parser("train", help="train an MLP autoencoder on a data set")
    t.add_argument("--data", required=True, help="built-in data set name or path")
    t.add_argument("--out", default=None, help="run directory (default runs/ae_<data>)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an autoencoder option: latent_dim, hidden, depth, steps, batch_size, lr, seed",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_autoencoder(args: argparse.Namespace) -> int:
    """``flowmatch autoencoder train``."""
    from flowmatch import api
    from flowmatch.api.latent import AutoencoderConfig, train_autoencoder
    from flowmatch.cli.progress import ProgressBar
    from flowmatch.config.schema import ConfigError, DataConfig, parse_value

    options: dict[str, Any] = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError("--set", f"expects key=value, got {item!r}")
        options[key.strip()] = parse_value(text.strip())
    known = {f.name for f in dataclasses.fields(AutoencoderConfig) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            "--set", f"unknown autoencoder option {unknown[0]!r}; choose from {sorted(known)}"
        )
    cfg = AutoencoderConfig(**options)
    train_ds, test_ds = api.load_data(DataConfig(name=args.data))
    out = Path(args.out or os.path.join("runs", f"ae_{Path(args.data).stem}"))
    callbacks = [] if args.quiet else [ProgressBar(cfg.steps)]
    print(f"training an autoencoder ({cfg.latent_dim}-d codes) on {train_ds.name} -> {out}")
    info = train_autoencoder(train_ds, out, cfg, test_ds=test_ds, callbacks=callbacks)
    print(
        f"reconstruction MSE (model space): train {info['recon_mse_train']:.4g}, held-out "
        f"{info['recon_mse_test']:.4g}; latent scale {info['scale']:.4g}"
    )
    print(f"wrote {out / 'latent.json'}; train a flow on its codes with --set data.latent={out}")
    return 0
