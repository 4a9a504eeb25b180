"""`python -m dlcore <command>`: datasets, devices, summary, train, init-sweep, resume, evaluate, predict,
runs, bench, download, export-code, export.

Invalid input exits non-zero with one line on stderr naming the field and what is allowed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dlcore",
                description="Train, evaluate and compare PyTorch image classifiers.")
    p.add_argument("--data-root", default=os.environ.get("DLCORE_DATA") or "data",
                   help="where full datasets live and are downloaded to (default: $DLCORE_DATA or data/)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("datasets", help="list datasets, whether each is available offline, and where from")

    dv = sub.add_parser("devices", help="the devices this machine can train on")
    dv.add_argument("--json", action="store_true", help="print them as one JSON object")

    s = sub.add_parser("summary", help="per-layer table of the model of a config")
    s.add_argument("config", help="config JSON file ({} is the default DNN on mnist-5k)")

    t = sub.add_parser("train", help="train a config into a new run directory")
    t.add_argument("config", help="config JSON file")
    t.add_argument("--runs-dir", default="runs", help="where runs are kept (default: runs/)")
    t.add_argument("--name", default=None, help="a name for the run (shown by `runs`)")
    t.add_argument("--run-dir", default=None,
                   help="fill this new run directory, made (and locked) by the app that "
                        "starts this worker, instead of making one under --runs-dir")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    sw = sub.add_parser("init-sweep", help="train a config once per init method, one run each")
    sw.add_argument("config", help="config JSON file (its model.init is replaced)")
    sw.add_argument("--runs-dir", default="runs", help="where runs are kept (default: runs/)")
    sw.add_argument("--name", default="init sweep",
                    help="runs are named '<name> · init=<init>' (default: 'init sweep')")
    sw.add_argument("--sweep-id", default=None,
                    help="the id the sweep's runs carry in meta.json (default: a new one)")
    sw.add_argument("--inits", nargs="+", default=None, metavar="INIT",
                    help="which inits (default: default gaussian xavier kaiming zeros)")

    rs = sub.add_parser("resume", help="continue a stopped or failed run from its last.pt")
    rs.add_argument("run_dir", help="a run directory")
    rs.add_argument("--epochs", type=int, default=None,
                    help="new total number of epochs (default: the run's own)")
    rs.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    e = sub.add_parser("evaluate", help="(re)write RUN_DIR/eval.json and print it")
    e.add_argument("run_dir", help="a run directory, e.g. runs/20260101-120000-mnist")

    pr = sub.add_parser("predict", help="classify image files with a run's best checkpoint")
    pr.add_argument("run_dir", help="a run directory")
    pr.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")

    r = sub.add_parser("runs", help="list saved runs")
    r.add_argument("--runs-dir", default="runs", help="where runs are kept (default: runs/)")

    b = sub.add_parser("bench", help="training throughput: the tutorial loop against the engine's")
    b.add_argument("--arch", choices=["dnn", "cnn", "resnet", "rnn"], action="append",
                   help="only this architecture (repeatable; default: all four)")
    b.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    b.add_argument("--seconds", type=float, default=3.0,
                   help="time per measured figure, in seconds (default: 3)")
    b.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="device (default: auto)")
    b.add_argument("--compile", action="store_true", help="torch.compile the engine's model")
    b.add_argument("--time-to-accuracy", nargs="?", type=float, const=0.925, metavar="ACC",
                   help="also time training to this test accuracy on Fashion-MNIST "
                        "(default 0.925)")

    d = sub.add_parser("download", help="download mnist, fashion-mnist or cifar10 (needs internet)")
    d.add_argument("dataset", help="mnist, fashion-mnist or cifar10")

    xc = sub.add_parser("export-code", help="a run as one standalone PyTorch training script")
    xc.add_argument("run_dir", help="a run directory")
    xc.add_argument("--out", default=None, help="write the script to this file (default: print it)")

    x = sub.add_parser("export", help="the best checkpoint as ONNX, or safetensors plus a JSON config")
    x.add_argument("run_dir", help="a run directory")
    x.add_argument("--format", required=True, help="onnx or safetensors")
    x.add_argument("--out", default=None,
                   help="file to write (default: RUN_DIR/export/model.onnx or model.safetensors; "
                        "the safetensors config goes beside it as .json)")
    return p


def main(argv=None) -> int:
    from .config import ConfigError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_BAD_INPUT
        if args.command in ("train", "resume", "init-sweep"):
            from .signals import stop_on_sigterm
            with stop_on_sigterm():      # before torch loads: Stop may come that early
                return COMMANDS[args.command](args)
        return COMMANDS[args.command](args)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # every other failure is one line, not a traceback
        from .datasets import DatasetUnavailable
        from .images import ImageError
        from .checkpoints import CheckpointError
        from .trainer import TrainingFailed
        if isinstance(e, (DatasetUnavailable, ImageError, CheckpointError)):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(e, TrainingFailed):
            print(f"error: training failed: {str(e).splitlines()[0]}", file=sys.stderr)
            return EXIT_FAILED
        if os.environ.get("DLCORE_DEBUG"):
            raise
        print(f"error: {e.__class__.__name__}: {e} (set DLCORE_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_FAILED


def cmd_datasets(args) -> int:
    from .datasets import BUILTIN, availability

    print(f"{'name':<14} {'classes':>7}  {'shape':<10} {'offline':<8} source")
    for name, info in BUILTIN.items():
        ok, where = availability(name, args.data_root)
        shape = "x".join(str(s) for s in info.shape)
        print(f"{name:<14} {len(info.classes):>7}  {shape:<10} {'yes' if ok else 'no':<8} "
              f"{where if ok else 'not here: ' + where}")
    print(f"{'folder':<14} {'-':>7}  {'CxSxS':<10} {'yes':<8} your images: data.root with one "
          "sub-folder per class")
    return 0


def cmd_devices(args) -> int:
    from .devices import device_report

    rep = device_report()
    if args.json:
        print(json.dumps(rep))
        return 0
    for key, value in rep.items():
        print(f"{key:<12} {value if value not in (None, False) else '-'}")
    return 0


def cmd_summary(args) -> int:
    from .config import load_config_file
    from .datasets import dataset_info
    from .models import format_summary, model_summary

    cfg = load_config_file(args.config)
    info = dataset_info(cfg["data"], args.data_root)
    summary = model_summary(cfg["model"], info.shape, len(info.classes))
    print(f"{cfg['model']['arch']} on {info.name} (input {'x'.join(map(str, info.shape))}, "
          f"{len(info.classes)} classes)")
    print(format_summary(summary))
    return 0


def cmd_train(args) -> int:
    from .config import load_config_file
    from .runs import check_name

    # the input errors that need no data come at once, before torch loads (seconds)
    cfg = load_config_file(args.config)
    check_name(args.name)
    from .train import train

    run_dir = train(cfg, runs_dir=args.runs_dir, name=args.name, data_root=args.data_root,
                    progress=not args.no_progress and sys.stderr.isatty(),
                    log=lambda s: print(s, flush=True), run_dir=args.run_dir)
    print(run_dir, flush=True)
    return 0


def cmd_init_sweep(args) -> int:
    from .config import load_config_file
    from .runs import check_name
    from .sweep import check_inits, init_sweep

    cfg = load_config_file(args.config)
    name = check_name(args.name) or "init sweep"
    results = init_sweep(cfg, args.runs_dir, name, data_root=args.data_root,
                         inits=check_inits(args.inits), log=lambda s: print(s, flush=True),
                         sweep_id=args.sweep_id)
    for init, run_dir, error in results:
        print(f"{init}\t{run_dir if run_dir else 'failed: ' + str(error)}", flush=True)
    return 0 if any(run_dir for _, run_dir, _ in results) else EXIT_FAILED


def cmd_resume(args) -> int:
    from .config import ConfigError

    if args.epochs is not None and not 1 <= args.epochs <= 10000:
        raise ConfigError(f"--epochs: {args.epochs} is out of range; allowed: from 1 to 10000")
    run_dir = _run_dir(args.run_dir)
    from .train import resume

    run_dir = resume(run_dir, data_root=args.data_root, epochs=args.epochs,
                     progress=not args.no_progress and sys.stderr.isatty(),
                     log=lambda s: print(s, flush=True))
    print(run_dir, flush=True)
    return 0


def cmd_evaluate(args) -> int:
    run_dir = _run_dir(args.run_dir)
    from .evaluate import evaluate_run

    result = evaluate_run(run_dir, data_root=args.data_root)
    print(json.dumps(result, indent=2))
    return 0


def cmd_predict(args) -> int:
    run_dir = _run_dir(args.run_dir)
    from .predict import predict

    for path in args.images:
        (r,) = predict(run_dir, [path])
        print(f"{path}\t{r['class']}\t{r['probability']:.4f}")
    return 0


def cmd_runs(args) -> int:
    from .runfiles import printable
    from .runs import RunStore

    runs = RunStore(args.runs_dir).list()
    if not runs:
        print(f"no runs in {printable(str(args.runs_dir))}")
        return 0
    print(f"{'id':<40} {'name':<24} {'state':<10} {'dataset':<14} {'arch':<10} best_val_acc")
    for r in runs:      # every field is checked or escaped: a run's files cannot drive the terminal
        acc = f"{r.best_val_acc:.4f}" if r.best_val_acc is not None else "-"
        state = r.state + (f" ({r.damaged})" if r.damaged else "")
        print(f"{printable(r.id):<40} {(r.name or '-'):<24} {state:<10} {r.dataset or '-':<14} "
              f"{r.arch or '-':<10} {acc}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    from .config import ConfigError

    if args.seconds <= 0:
        raise ConfigError(f"--seconds: {args.seconds:g} is out of range; allowed: more than 0")
    if args.time_to_accuracy is not None and not 0 < args.time_to_accuracy < 1:
        raise ConfigError(f"--time-to-accuracy: {args.time_to_accuracy:g} is out of range; "
                          "allowed: between 0 and 1 (e.g. 0.925)")
    run_bench(args.arch or ["dnn", "cnn", "resnet", "rnn"], seconds=args.seconds,
              json_path=args.json, tta=args.time_to_accuracy, data_root=args.data_root,
              device=args.device, compile_model=args.compile, log=lambda s: print(s, flush=True))
    return 0


def cmd_download(args) -> int:
    from .datasets import download

    print(download(args.dataset, args.data_root))
    return 0


def cmd_export_code(args) -> int:
    from .config import ConfigError
    from .export import refuse_run_file
    from .export import export_code

    run_dir = _run_dir(args.run_dir)
    if args.out is not None:
        refuse_run_file(run_dir, Path(args.out))
    code = export_code(run_dir)
    if args.out is None:
        sys.stdout.write(code)
        return 0
    try:
        Path(args.out).write_text(code, encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--out: cannot write {args.out!r}: {e.strerror or e}") from None
    print(args.out)
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    for path in export_run(_run_dir(args.run_dir), args.format, args.out):
        print(path)
    return 0


def _run_dir(path: str) -> Path:
    from .config import ConfigError

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"RUN_DIR: {path!r} is not a run directory")
    if not (p / "config.json").exists():
        raise ConfigError(f"RUN_DIR: {path!r} has no config.json; is it a run directory?")
    return p


COMMANDS = {"datasets": cmd_datasets, "devices": cmd_devices, "summary": cmd_summary, "train": cmd_train,
            "resume": cmd_resume, "init-sweep": cmd_init_sweep,
            "evaluate": cmd_evaluate, "predict": cmd_predict, "runs": cmd_runs,
            "bench": cmd_bench, "download": cmd_download, "export-code": cmd_export_code,
            "export": cmd_export}
