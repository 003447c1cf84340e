"""The ``pneumoloc`` command: generate the phantom dataset, execute run specs, browse a run.

    pneumoloc phantom --out data/phantom --n-images 2000 --size 256
    pneumoloc run papermill_runs/demo.yaml [--only 02] [--from 03] [--force] [--resume]
    pneumoloc run papermill_runs/demo.yaml --executor local --workers 2   # a foreach entry at once
    pneumoloc run papermill_runs/demo.yaml --executor slurm [--check]     # one Slurm job per stage
    pneumoloc status demo                                                 # the run's manifest
    pneumoloc train --run-dir papermill_runs/demo --set backbone=resnet50 --devices 4   # DDP on 4 GPUs
    pneumoloc browse papermill_runs/demo [--port 8866]
    pneumoloc import-checkpoint their_densenet.pt --backbone densenet121 --run demo  # a published model

Phantom flags are derived from :class:`pneumoloc.phantom.writer.PhantomConfig`, so a new
phantom parameter is a new flag without touching this file.

``pneumoloc run`` exits 0 when every stage is ok or skipped, 1 when a stage failed
or timed out, 2 for an invalid spec or option, 75 (``EX_TEMPFAIL`` of sysexits.h:
try again later) when another run holds the run folder, and 128 + the signal
number (130 for SIGINT, 143 for SIGTERM, the shell's convention) when stopped by
a signal. ``pneumoloc status`` exits 0, or 2 when the run has no readable manifest.
``pneumoloc train`` exits 0, 1 when training (a rank) failed, 2 for invalid options.
``pneumoloc import-checkpoint`` exits 0, or 2 for a missing or unusable checkpoint or run.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

__all__ = ["main", "build_parser", "EXIT_LOCKED"]

EXIT_LOCKED = 75  # EX_TEMPFAIL (sysexits.h): the run folder is busy, try again later


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        origin = typing.get_origin(kind)
        if kind is bool:
            parser.add_argument(flag, type=_bool, default=None, metavar="BOOL", help=f"default: {default}")
        elif origin is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(flag, type=item, nargs="+", default=None, help=f"default: {default}")
        else:
            parser.add_argument(flag, type=kind if kind in (int, float, str) else str, default=None,
                                help=f"default: {default}")


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"pneumoloc run: --set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pneumoloc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks of a run spec with papermill")
    run.add_argument("spec", help="papermill_runs/<name>.yaml")
    run.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (names or prefixes, e.g. 02)")
    run.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and all after it")
    run.add_argument("--force", action="store_true", help="rerun stages even when their inputs are unchanged")
    run.add_argument("--run-dir", help="override papermill_runs/<name>")
    run.add_argument("--figures-dir", help="override figures/<name>")
    run.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                     help="parameter for every notebook that declares it; VALUE is YAML (e.g. epochs=3)")
    run.add_argument("--executor", default="inline", choices=_executor_names(),
                     help="inline: one stage after another (default); local: a foreach entry's stages in "
                          "parallel processes; slurm: one Slurm job per stage (job arrays for foreach), via submitit")
    run.add_argument("--workers", type=int, default=1, help="stages run at once by --executor local (default 1)")
    run.add_argument("--resume", action="store_true",
                     help="rerun only what failed or never ran; failed training continues from its last.pt")
    run.add_argument("--check", action="store_true",
                     help="validate the spec, its resources and the options, print the stages, run nothing")

    status = sub.add_parser("status", help="print a run's manifest: stages, states, Slurm jobs, nodes, logs")
    status.add_argument("run", help="run name (papermill_runs/<name>), run folder, or its spec (.yaml)")

    train = sub.add_parser("train", help="train one backbone of a run (notebook 02's training), on N devices / M nodes")
    train.add_argument("--run-dir", required=True, help="run folder holding notebook 01's split")
    train.add_argument("--devices", type=int, default=1, help="processes per node: GPUs, or CPU ranks (default 1)")
    train.add_argument("--nodes", type=int, default=1, help="nodes; run the command once per node (default 1)")
    train.add_argument("--resume", action="store_true", help="continue from the model's last.pt")
    train.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                       help="training options (pneumoloc.training.config.TrainConfig); VALUE is YAML, e.g. "
                            "backbone=resnet50 epochs=30")

    phantom = sub.add_parser("phantom", help="generate the phantom chest X-ray dataset")
    phantom.add_argument("--out", default="data/phantom", help="output folder (default: data/phantom)")
    from .phantom.config import PhantomConfig

    _add_dataclass_flags(phantom, PhantomConfig)

    imp = sub.add_parser("import-checkpoint", help="make a checkpoint saved by the Shahi & Bagale code a model of "
                                                   "a run (best.pt, predictions, metrics) in place of training it")
    imp.add_argument("path", help="the .pt file their train.py saved")
    imp.add_argument("--backbone", required=True, help="model name in the run: the checkpoint's architecture "
                                                       "(resnet18 resnet50 densenet121 efficientnet_b0 ...)")
    imp.add_argument("--run", required=True,
                     help="run name (papermill_runs/<name>) or run folder holding notebook 01's split")
    imp.add_argument("--image-size", type=int, default=0, help="input side in pixels (default: the checkpoint's)")
    imp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    imp.add_argument("--spec-target", type=float, default=0.95,
                     help="validation specificity of the reported operating point (default: 0.95)")
    imp.add_argument("--n-boot", type=int, default=1000, help="patient-bootstrap resamples (default: 1000)")
    imp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")

    browse = sub.add_parser("browse", help="serve a run's heatmap browser and headline table as a web page (Voila)")
    browse.add_argument("run", help="run folder (papermill_runs/<name>) or run name")
    browse.add_argument("--port", type=int, default=8866, help="default: 8866")
    browse.add_argument("--ip", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    return parser


def _executor_names() -> list[str]:
    from .runs.executors import EXECUTORS

    return EXECUTORS.names()


def _status(run: str) -> int:
    """``pneumoloc status RUN``: the manifest as a table."""
    from pathlib import Path

    from .environment import RUNS_DIR, resolve
    from .runs.manifest import ManifestStore, describe

    given = resolve(run) if ("/" in run or run.endswith((".yaml", ".yml"))) else RUNS_DIR / run
    folder = given.with_suffix("") if given.suffix in (".yaml", ".yml") else Path(given)
    try:
        print(describe(ManifestStore(folder / "manifest.json").read()))
    except (OSError, ValueError) as e:
        print(f"pneumoloc status: no manifest readable in {folder} ({e}); "
              "give a run name, a run folder or its spec", file=sys.stderr)
        return 2
    return 0


def _check(args: argparse.Namespace) -> int:
    """``pneumoloc run SPEC --check``: validate and print the plan."""
    from .runs.runner import check_run

    try:
        print(check_run(args.spec, executor=args.executor, workers=args.workers,
                        overrides=_parse_sets(args.overrides)))
    except (ValueError, FileNotFoundError) as e:
        print(f"pneumoloc run: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    """``pneumoloc train``: the library's :func:`pneumoloc.training.distributed.train_in_run`."""
    from .training.config import TrainConfig
    from .training.distributed import DistributedTrainingError, train_in_run

    try:
        cfg = TrainConfig.from_dict(_parse_sets(args.overrides))
        result, out = train_in_run(args.run_dir, cfg, devices=args.devices,
                                   nodes=args.nodes, resume=args.resume)
    except DistributedTrainingError as e:
        print(f"pneumoloc train: FAILED: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"pneumoloc train: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(f"pneumoloc train: {result.stopped}, best epoch {result.best_epoch} (validation ROC-AUC "
              f"{result.best_score:.4f}); checkpoints in {out}")
    return 0


def _import_checkpoint(args: argparse.Namespace) -> int:
    """``pneumoloc import-checkpoint``: :func:`pneumoloc.training.imported.import_into_run`."""
    import pickle

    from .environment import RUNS_DIR, RunPaths, resolve
    from .training.imported import import_into_run

    root = resolve(args.run) if ("/" in args.run or args.run.startswith(".")) else RUNS_DIR / args.run
    try:
        done = import_into_run(args.path, RunPaths.from_params(str(root)), args.backbone,
                               image_size=args.image_size, spec_target=args.spec_target, n_boot=args.n_boot,
                               seed=args.seed, device=args.device)
    except (ValueError, FileNotFoundError, pickle.UnpicklingError) as e:
        print(f"pneumoloc import-checkpoint: {e}", file=sys.stderr)
        return 2
    auc = done.scores["operating_points"]["default"]["roc_auc"]
    print(f"pneumoloc import-checkpoint: {args.backbone} of {root.name} from {args.path}; test ROC-AUC "
          f"{auc:.4f} on {done.scores['n_test']} images; best.pt, predictions.csv, metrics.json in "
          f"{done.model_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "import-checkpoint":
        return _import_checkpoint(args)
    if args.command == "train":
        return _train(args)
    if args.command == "status":
        return _status(args.run)
    if args.command == "run" and args.check:
        return _check(args)
    if args.command == "run":
        from .runs import runner as runs
        from .runs.lock import RunLocked

        try:
            manifest = runs.run_spec(args.spec, only=args.only, start=args.start, force=args.force,
                                     run_dir=args.run_dir, figures_dir=args.figures_dir,
                                     overrides=_parse_sets(args.overrides), executor=args.executor,
                                     workers=args.workers, resume=args.resume)
        except runs.RunInterrupted as e:
            print(f"pneumoloc run: {e}", file=sys.stderr)
            return 128 + e.signum
        except RunLocked as e:
            print(f"pneumoloc run: {e}", file=sys.stderr)
            return EXIT_LOCKED
        except runs.RunFailed as e:
            print(f"pneumoloc run: FAILED: {e}", file=sys.stderr)
            return 1
        except (ValueError, FileNotFoundError) as e:
            print(f"pneumoloc run: {e}", file=sys.stderr)
            return 2
        counts: dict[str, int] = {}
        for s in manifest["stages"]:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        print(f"pneumoloc run: {manifest['run']} ok ({counts}); manifest in {manifest['run_dir']}/manifest.json")
        return 0
    if args.command == "phantom":
        from .environment import resolve
        from .phantom.writer import generate_phantom

        overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
                     if k not in ("command", "out") and v is not None}
        out = generate_phantom(resolve(args.out), **overrides)
        print(f"phantom dataset in {out}")
        return 0
    if args.command == "browse":
        from .runs.browse import serve

        try:
            serve(args.run, port=args.port, ip=args.ip)  # does not return: the process becomes Voila
        except FileNotFoundError as e:
            print(f"pneumoloc browse: {e}", file=sys.stderr)
            return 2
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
