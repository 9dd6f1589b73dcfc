"""What the ship scripts share: their common options, the best model of a run, and writing the shipped file with
its manifest entry (sha256, size, licence, training data, budget, metrics, the command that reproduces it)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def shipping_parser(description: str, default_metric: str) -> argparse.ArgumentParser:
    """The options every ship script takes (a script adds its own)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--metric", default=default_metric, help="selection metric whose best model ships")
    parser.add_argument("--metrics", type=Path, help="JSON object of held-out figures")
    parser.add_argument("--budget", required=True)
    parser.add_argument("--reproduce", required=True)
    parser.add_argument("--shipped", type=Path, default=ROOT / "RegSegLib" / "models" / "shipped")
    return parser


def best_record(args: argparse.Namespace) -> dict[str, Any]:
    """The run's best model for ``--metric`` (``best-METRIC/model.pt``: weights, configuration, epoch, value)."""
    import torch

    return torch.load(args.run / f"best-{args.metric}" / "model.pt", map_location="cpu", weights_only=True)


def ship(args: argparse.Namespace, shipped: dict[str, Any], record: dict[str, Any], **entry: Any) -> None:
    """Saves ``shipped`` as ``--shipped/NAME.pt`` and puts its manifest entry in place of any of that name.

    Args:
        args: the parsed options.
        shipped: what the shipped file holds.
        record: the run's best model (its value becomes ``validation_METRIC``, beside ``--metrics``).
        **entry: the entry's ``task``, ``licence``, ``training_data`` and ``input``.
    """
    import torch

    from RegSegLib.models.manifest import ModelEntry, file_sha256, read_manifest, write_manifest

    path = args.shipped / f"{args.name}.pt"
    torch.save(shipped, path)
    metrics = {f"validation_{args.metric}": float(record["value"])}
    if args.metrics:
        metrics.update({key: float(value) for key, value in json.loads(args.metrics.read_text()).items()})
    written = ModelEntry(
        name=args.name, version=args.version, file=path.name, sha256=file_sha256(path), size=path.stat().st_size,
        budget=args.budget, reproduce=args.reproduce, metrics=metrics, **entry,
    )
    manifest = args.shipped / "manifest.json"
    entries = [existing for existing in read_manifest(manifest) if existing.name != args.name]
    write_manifest(entries + [written], manifest)
    print(f"{Path(sys.argv[0]).stem}: {path} ({written.size / 1e6:.2f} MB, sha256 {written.sha256[:12]}...)")
