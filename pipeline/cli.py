"""The `tfflows` command line.

  tfflows run      [--config FILE.yaml] [--data PATH | --dataset NAME | --target U1..U4|module:fn]
                   [--model KIND] [--epochs N] [--output DIR] [--set section.field=value ...]
  tfflows evaluate --model DIR --data PATH [--scores FILE]
  tfflows sample   --model DIR -n N [--seed S] --out FILE(.npy|.csv|.png)
  tfflows ui       [--config FILE.yaml] [--output DIR] [--port 5000]
  tfflows compile  --target kubeflow|vertex [--config FILE.yaml] [--out FILE.json] [--image IMAGE]

Every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

FILE_DATASETS = {".csv": "csv", ".npy": "npy", ".npz": "npz", ".tfrecord": "tfrecord", ".gz": "idx"}


def _dataset_for(path: str) -> str:
    if os.path.isdir(path):
        return "images"
    name = path.lower()
    if "idx3-ubyte" in name:
        return "idx"
    for suffix, dataset in FILE_DATASETS.items():
        if name.endswith(suffix):
            return dataset
    raise SystemExit(f"tfflows: --data {path}: cannot tell the format from the name; add --dataset "
                     f"(csv, npy, npz, idx, images, tfrecord or a benchmark name)")


def _run_overrides(args) -> dict:
    overrides: dict = {}
    if args.data or args.dataset:
        ingest = overrides.setdefault("ingest", {})
        if args.data:
            ingest["path"] = args.data
        ingest["dataset"] = args.dataset or _dataset_for(args.data)
    if args.target:  # variational inference: reverse KL to the target, a 32-layer planar flow by default
        overrides.setdefault("train", {}).update(objective="reverse_kl", target=args.target)
        if not args.model:
            overrides["train"].update(kind="planar", num_layers=32)
    if args.model:
        overrides.setdefault("train", {})["kind"] = args.model
    if args.epochs is not None:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    if args.output:
        overrides["output"] = args.output
    return overrides


def _load_config(args, overrides=None):
    from tfflows.pipeline.config import load_run_config

    return load_run_config(args.config, overrides, args.set or ())


def cmd_run(args) -> int:
    from tfflows.pipeline.runner import run_local

    config = _load_config(args, _run_overrides(args))
    if config.train.objective == "vae":
        posterior = f"IAF posterior ({config.train.num_layers} steps)" if config.train.num_layers else "diagonal posterior"
        print(f"tfflows run: {config.ingest.dataset} -> VAE with {posterior}; ingest, train, evaluate, push into "
              f"{os.path.abspath(config.output)}", flush=True)
    elif config.train.objective == "reverse_kl":
        print(f"tfflows run: target {config.train.target} -> {config.train.kind} flow by reverse KL; train, "
              f"evaluate, push into {os.path.abspath(config.output)}", flush=True)
    else:
        print(f"tfflows run: {config.ingest.dataset} -> {config.train.kind} flow; ingest, transform, train, "
              f"evaluate, push into {os.path.abspath(config.output)}", flush=True)
    result = run_local(config)
    print(result.report())
    return 0 if result.ok else 3


def cmd_evaluate(args) -> int:
    from tfflows.pipeline.serving import evaluate_saved_model

    report = evaluate_saved_model(args.model, args.data, scores_path=args.scores)
    print(report)
    return 0


def cmd_sample(args) -> int:
    from tfflows.pipeline.serving import sample_saved_model

    print(sample_saved_model(args.model, args.n, args.seed, args.out))
    return 0


def cmd_ui(args) -> int:
    from tfflows.pipeline.runner import tracking_uri

    config = _load_config(args, {"output": args.output} if args.output else None)
    uri = tracking_uri(config)
    command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    return subprocess.call(command)


def cmd_compile(args) -> int:
    from tfflows.pipeline.runner import compile_for_cluster

    config = _load_config(args)
    path = compile_for_cluster(config, args.target, args.out, args.image)
    print(f"wrote the {args.target} pipeline spec to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfflows", description="Normalizing-flow density estimation pipelines.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline (ingest, transform, train, evaluate, push)")
    run.add_argument("--config", help="YAML file with any RunConfig fields (see pipeline/config.py)")
    run.add_argument("--data", help="a data file or folder (format from its name unless --dataset says)")
    run.add_argument("--dataset", help="dataset name: moons, digits, mnist, csv, npy, ... (see README)")
    run.add_argument("--target", help="fit a flow to this unnormalised density by reverse KL instead of to "
                     "data: U1, U2, U3, U4 or package.module:function (then --set train.target_dim=D)")
    run.add_argument("--model", help="flow kind: made, made_mog, maf, iaf, realnvp, haf, planar")
    run.add_argument("--epochs", type=int, help="maximum training epochs")
    run.add_argument("--output", help="output folder (artifacts, metadata, serving/, mlflow.db)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any field, e.g. train.epochs=5")
    run.set_defaults(func=cmd_run)

    evaluate = sub.add_parser("evaluate", help="log-likelihood of a pushed model on new data")
    evaluate.add_argument("--model", required=True, help="a pushed SavedModel (serving/<version>) or the serving/ folder (latest)")
    evaluate.add_argument("--data", required=True, help=".npy or .csv (header) file of raw rows")
    evaluate.add_argument("--scores", help="write per-row log-likelihoods here (.npy or .csv)")
    evaluate.set_defaults(func=cmd_evaluate)

    sample = sub.add_parser("sample", help="draw samples from a pushed model")
    sample.add_argument("--model", required=True)
    sample.add_argument("-n", type=int, required=True, help="number of samples")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help=".npy, .csv or .png (an image grid, image data only)")
    sample.set_defaults(func=cmd_sample)

    ui = sub.add_parser("ui", help="start the MLflow UI on the project's tracking store")
    ui.add_argument("--config")
    ui.add_argument("--output")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--set", action="append", metavar="KEY=VALUE")
    ui.set_defaults(func=cmd_ui)

    comp = sub.add_parser("compile", help="write the Kubeflow Pipelines / Vertex AI pipeline spec")
    comp.add_argument("--target", required=True, choices=["kubeflow", "vertex"])
    comp.add_argument("--config")
    comp.add_argument("--out", help="output JSON (default: <output>/<pipeline>_<target>.json)")
    comp.add_argument("--image", default="tfflows:latest", help="container image holding tfflows")
    comp.add_argument("--set", action="append", metavar="KEY=VALUE")
    comp.set_defaults(func=cmd_compile)
    return parser


def _show_progress() -> None:
    """Components log progress (epochs, steps, examples/s, rollbacks) to the `tfflows` loggers."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("tfflows")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress()
    from tfflows.components.errors import DataError
    from tfflows.pipeline.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as error:
        print(f"tfflows {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
