"""``regseg models list|info|import|verify|remove|download``: the trained models of the store.

The store is ``$REGSEG_HOME`` (default: the platform's user cache, ``~/.cache/regseg`` on Linux) plus the
models shipped inside RegSegLib; see :mod:`RegSegLib.models.store`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from RegSegLib.models.manifest import TASKS, read_entry
from RegSegLib.models.store import ModelStore, StoredModel

COMMAND = "models"
ORDER = 40
HELP = "list, inspect, import, verify and remove trained models"
DESCRIPTION = (
    "The trained models RegSeg uses: shipped with it, or installed in the cache folder ($REGSEG_HOME, default "
    "the user cache). 'import' takes NAME.pt with NAME.json beside it (one manifest entry), or the .json alone "
    "when its 'file' names the weights beside it; the sha256 and size must match the entry."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the models (shipped and installed)")
    listing.add_argument("--task", choices=TASKS, help="only the models of this task")
    listing.add_argument("--json", action="store_true", help="print a JSON list of the entries")
    info = actions.add_parser("info", help="everything the manifest says about one model")
    info.add_argument("name", metavar="NAME")
    info.add_argument("--json", action="store_true", help="print the entry as JSON")
    importing = actions.add_parser("import", help="install a model file from disk (offline sites)")
    importing.add_argument("file", metavar="FILE", help="NAME.pt with NAME.json beside it, or the NAME.json")
    importing.add_argument("--entry", metavar="JSON", help="the manifest entry, when it is not beside FILE")
    importing.add_argument("--replace", action="store_true", help="replace an installed model of the same name")
    actions.add_parser("verify", help="check every model file's size and sha256 against its entry")
    remove = actions.add_parser("remove", help="remove an installed model")
    remove.add_argument("name", metavar="NAME")
    fetching = actions.add_parser("download", help="download a model from the url of its manifest entry")
    fetching.add_argument("entry", metavar="JSON", help="the manifest entry, with a url")
    fetching.add_argument("--replace", action="store_true", help="replace an installed model of the same name")


def run(args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    """Runs the chosen action on the user's store."""
    return ACTIONS[args.action](ModelStore(), args, report)


def _list(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    models = store.list_models(args.task)
    if args.json:
        print(json.dumps([model.to_dict() for model in models], indent=2), flush=True)
    elif not models:
        print(f"no models{f' for {args.task}' if args.task else ''} (installed ones go to {store.folder})", flush=True)
    else:
        rows = [("NAME", "TASK", "VERSION", "LICENCE", "SOURCE")]
        rows += [(m.entry.name, m.entry.task, m.entry.version, m.entry.licence, m.source) for m in models]
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        for row in rows:
            print("  ".join(value.ljust(width) for value, width in zip(row, widths)) + "  " + row[4])
        sys.stdout.flush()
    return 0


def _info(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    model = store.info(args.name)
    print(json.dumps(model.to_dict(), indent=2) if args.json else "\n".join(model.description()), flush=True)
    return 0


def _installed(model: StoredModel) -> int:
    print(f"regseg: installed {model.entry.name} {model.entry.version} ({model.entry.task}) as {model.path}", flush=True)
    return 0


def _import(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    entry = read_entry(args.entry) if args.entry else None
    return _installed(store.import_file(args.file, entry, replace=args.replace))


def _verify(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    checks = store.verify()
    for check in checks:
        if check.ok:
            print(f"ok {check.model.entry.name} ({check.model.source})", flush=True)
        else:
            print(f"regseg: error: {check.model.path}: {check.problem}", file=sys.stderr, flush=True)
    if not checks:
        print("no models to verify", flush=True)
    return 0 if all(check.ok for check in checks) else 2


def _remove(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    model = store.remove(args.name)
    print(f"regseg: removed {model.entry.name} {model.entry.version} ({model.path})", flush=True)
    return 0


def _download(store: ModelStore, args: argparse.Namespace, report: Callable[[float, str], None]) -> int:
    from RegSegLib.models.remote import download
    from RegSegLib.runtime import Progress

    model = download(read_entry(args.entry), store, Progress(report), replace=args.replace)
    report(1.0, "done")
    return _installed(model)


ACTIONS: dict[str, Callable[[ModelStore, argparse.Namespace, Callable[[float, str], None]], int]] = {
    "list": _list,
    "info": _info,
    "import": _import,
    "verify": _verify,
    "remove": _remove,
    "download": _download,
}
