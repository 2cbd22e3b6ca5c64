"""The `tfflows` command line.

    tfflows run      [--config FILE.yaml] [--data PATH | --dataset NAME | --target U1..U4|module:fn]
                     [--model KIND] [--epochs N] [--output DIR|gs://B/P] [--metadata FILE]
                     [--set section.field=value ...]
    tfflows evaluate --model DIR --data PATH [--scores FILE] [--threshold q0.01|LOGP] [--beam-args="--runner=... ..."]
    tfflows sample   --model DIR -n N [--seed S] [--context 'c1=V,c2=W' | --context FILE] --out FILE(.npy|.csv|.png)
    tfflows ui       [--config FILE.yaml] [--output DIR] [--port 5000]
    tfflows compile  --target kubeflow|vertex --pipeline-root gs://B/P --tracking-uri http://MLFLOW:5000
                     --push-base gs://B/P [--config FILE.yaml] [--out FILE.json] [--image IMAGE] [--cpu N --memory-gb G]
    tfflows promote  --version N [--config FILE.yaml] [--output DIR]   (registry alias + TF Serving `stable`)
    tfflows rollback [--config FILE.yaml] [--output DIR]               (back to the previous version)

Every failure is one line on stderr and a non-zero exit status: 2 for a user's mistake (bad
configuration, data, paths), 3 when training diverged or no model came out, 1 for anything else.
The configuration is checked before TensorFlow is imported. Commands are quiet: TensorFlow, Beam
and MLflow logs and any traceback go to a log file (`<output>/logs/`, or the temporary folder)
that the failure line names; `--verbose` shows everything instead (`pipeline/terminal.py`).

This module is the project's one import boundary: it imports at its top only what is free of
TensorFlow, TFX, Beam and MLflow (the configuration's error types, `pipeline.extras`,
`pipeline.terminal`); each command imports the configuration (`pipeline.config`, after
`missing_extra`), checks it (and for run and compile `pipeline.preflight`'s checks, which write
nothing), and only then imports inside its function the modules that load those libraries at
their top (`pipeline.runner`: TFX; `pipeline.serving`; `pipeline.registry`: MLflow). Every other
import reads top-down with no cycle (`tests/test_imports.py`; `tests/test_config.py` checks that
the configuration path loads none of the four).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import signal
import socket
import subprocess
import sys

from tfflows.components.config import FILE_FORMATS, ConfigError
from tfflows.components.errors import DataError, RegistrationError, TrainingDivergedError
from tfflows.components.tables import FORMATS as TABLE_FORMATS
from tfflows.pipeline.extras import missing_extra
from tfflows.pipeline.terminal import Terminal

# file ending -> dataset: the table formats' (`components.tables.FORMATS`), then the others
FILE_DATASETS = {**{ending: f.name for f in TABLE_FORMATS.values() for ending in f.endings},
                 ".tfrecord": "tfrecord", ".gz": "idx"}


def _dataset_for(path: str) -> str:
    if os.path.isdir(path):
        return "images"
    name = path.lower()
    if "idx3-ubyte" in name:
        return "idx"
    for suffix, dataset in FILE_DATASETS.items():
        if name.endswith(suffix):
            return dataset
    raise ConfigError(f"--data {path}: cannot tell the format from the name; fix: add --dataset "
                      f"({', '.join(FILE_FORMATS)} or a benchmark name)")


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
    if args.metadata:
        overrides["metadata"] = args.metadata
    return overrides


def _load_config(args, overrides=None):
    from tfflows.pipeline.config import load_run_config

    return load_run_config(args.config, overrides, args.set or ())


def _push_destination(push_base: str | None) -> str:
    """For the plan line: where the serving versions go when not under the output (a bucket or
    another folder), else nothing."""
    from tfflows.components.artifacts import SERVING_DIR, is_object_store, join

    if not push_base:
        return ""
    return f" (serving versions to {join(push_base if is_object_store(push_base) else os.path.abspath(push_base), SERVING_DIR)})"


def cmd_run(args) -> int:
    config = _load_config(args, _run_overrides(args))
    from tfflows.pipeline.preflight import modelled_density, preflight, step_names

    preflight(config)  # nothing is written (not even the log) for a mistake found before the run
    terminal = args.terminal
    terminal.capture(config.logs_dir, config.progress, config.progress_every_epochs)
    from tfflows.components.objectives import get_objective

    objective = get_objective(config.train.objective)
    steps = ", ".join(step_names(config))
    density = modelled_density(config)
    terminal.say(f"tfflows run: {objective.describe(config.train, config.ingest.dataset)}"
                 f"{f' of {density}' if density else ''}; {steps} into "
                 f"{config.output_path()}{_push_destination(config.push.push_base)}")
    if config.on_bucket:
        terminal.say(_local_stores_line(config))
    from tfflows.pipeline.runner import run_local, upload_log

    try:
        result = run_local(config)
    finally:
        log_copy = upload_log(config, terminal.log_path)
    terminal.say(result.report())
    if terminal.log_path:
        terminal.say(f"log: {terminal.log_path}" + (f" (copied to {log_copy})" if log_copy else ""))
    return 0 if result.ok else 3


def _local_stores_line(config) -> str:
    """For an output on a bucket: the line that says where the SQLite stores a bucket cannot hold are."""
    from tfflows.pipeline.config import tracking_uri

    uri = tracking_uri(config)
    mlflow = (f"the MLflow store {uri.removeprefix('sqlite:///')}" if uri.startswith("sqlite:///") and not
              config.tracking.uri else f"MLflow at {uri}")
    return (f"local stores (a bucket cannot hold SQLite): ML Metadata {os.path.abspath(config.metadata_path)}, "
            f"{mlflow if config.tracking.enabled else 'no MLflow (tracking.enabled=false)'} "
            "(--metadata FILE, --set tracking.uri=URI to choose others)")


def _model_path(args) -> str:
    """``--model``; a registry URI (``models:/NAME@ALIAS``) resolved to a local copy of its SavedModel
    in the store of ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``--output``
    (`registry.store_uri`)."""
    if not args.model.startswith("models:/"):
        return args.model
    from tfflows.pipeline.registry import registered_model_dir, store_uri

    return registered_model_dir(args.model, store_uri(args.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"),
                                                      args.output))


def cmd_evaluate(args) -> int:
    from tfflows.pipeline.serving import evaluate_saved_model

    args.terminal.capture(None)
    beam_args = shlex.split(args.beam_args) if args.beam_args is not None else None
    args.terminal.say(evaluate_saved_model(_model_path(args), args.data, scores_path=args.scores, beam_args=beam_args,
                                           threshold=args.threshold))
    return 0


SAMPLE_FORMATS = (".npy", ".csv", ".png")


def cmd_sample(args) -> int:
    if not args.out.endswith(SAMPLE_FORMATS):  # numpy would add .npy to any other name, silently
        raise ConfigError(f"--out {args.out}: unknown file extension; fix: name the file {', '.join(SAMPLE_FORMATS)} "
                          "(.png: an image grid, image data only)")
    from tfflows.pipeline.serving import sample_saved_model

    args.terminal.capture(None)
    args.terminal.say(sample_saved_model(_model_path(args), args.n, args.seed, args.out, context=args.context))
    return 0


def _check_port_free(port: int) -> None:
    """Refuses a port something already listens on: `mlflow ui` would log "Address already in use"
    and exit 0, as if it had served."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise ConfigError(f"--port {port}: 127.0.0.1:{port} cannot be served ({error.strerror}; another "
                              f"tfflows ui or server?); fix: stop that one or pass another --port") from None


def _serve(command: list[str]) -> int:
    """Runs the server `command` in its own process group and, on SIGTERM or SIGINT, stops the whole
    group: `mlflow ui` starts the web server as a child of its own, which a signal to `mlflow` alone
    left running on the port. Returns 0 for a stop asked for, else the server's exit status."""
    server = subprocess.Popen(command, start_new_session=True)
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = server.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived its leader
            os.killpg(server.pid, signal.SIGKILL)
    return 0 if stopping else status


def cmd_ui(args) -> int:
    from tfflows.pipeline.config import tracking_uri

    config = _load_config(args, {"output": args.output} if args.output else None)
    uri = tracking_uri(config)
    _check_port_free(args.port)
    command = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    return _serve(command)


# compile's flags -> (section, field) of the configuration they set (`ClusterConfig`, tracking, push).
COMPILE_FLAGS = {"pipeline_root": ("cluster", "pipeline_root"), "image": ("cluster", "image"),
                 "cpu": ("cluster", "cpu"), "memory_gb": ("cluster", "memory_gb"),
                 "tracking_uri": ("tracking", "uri"), "push_base": ("push", "push_base")}


def cmd_compile(args) -> int:
    overrides: dict = {}
    for flag, (section, name) in COMPILE_FLAGS.items():
        if getattr(args, flag) is not None:
            overrides.setdefault(section, {})[name] = getattr(args, flag)
    config = _load_config(args, overrides)
    from tfflows.pipeline.preflight import check_cluster

    check_cluster(config)  # before the log folder: a refused spec leaves nothing behind
    args.terminal.capture(config.logs_dir)
    from tfflows.pipeline.runner import compile_for_cluster

    path = compile_for_cluster(config, args.target, args.out)
    args.terminal.say(f"wrote the {args.target} pipeline spec to {path}")
    return 0


def cmd_registry(args) -> int:
    overrides = {"output": args.output} if args.output else {}
    if uri := args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"):  # `registry.store_uri`'s order
        overrides["tracking"] = {"uri": uri}
    config = _load_config(args, overrides)
    from tfflows.pipeline import registry  # MLflow: after the configuration is checked

    print(registry.promote(config, args.version) if args.command == "promote" else registry.rollback(config))
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
    run.add_argument("--model", help="flow kind: made, made_mog, maf, iaf, realnvp, haf, nice, planar, or for image data glow, "
                     "realnvp_image (spline transformers: --set train.flow_options='{transformer: spline}')")
    run.add_argument("--epochs", type=int, help="maximum training epochs")
    run.add_argument("--output", help="output folder (artifacts, metadata, serving/, mlflow.db), or a bucket "
                     "gs://BUCKET/PREFIX (the SQLite stores then stay in a local folder the run names)")
    run.add_argument("--metadata", help="the ML Metadata SQLite file (default: <output>/metadata.sqlite; for a "
                     "bucket output ~/.tfflows/gs/BUCKET/PREFIX/metadata.sqlite)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any field, e.g. train.epochs=5")
    run.set_defaults(func=cmd_run)

    evaluate = sub.add_parser("evaluate", help="log-likelihood of a pushed model on new data")
    evaluate.add_argument("--model", required=True, help="a pushed SavedModel (serving/<version>), the serving/ folder "
                          "(latest) or models:/NAME@ALIAS (looked up in --tracking-uri, MLFLOW_TRACKING_URI or --output)")
    evaluate.add_argument("--data", required=True, help=f"a table of raw rows ({', '.join(f.endings[0] for f in TABLE_FORMATS.values())}): columns "
                          "matched by name where the file names them (a .csv's header), else by position")
    evaluate.add_argument("--scores", help="write per-row results here: .csv (row, log_prob, percentile, is_anomaly) "
                          "or .npy (log_prob)")
    evaluate.add_argument("--threshold", metavar="q0.01|LOGP", help="flag rows scoring below the model's held-out "
                          "quantile (q0.01: 1%% of its held-out rows score lower) or below a log-density (-12.5)")
    evaluate.add_argument("--beam-args", metavar="OPTIONS", help="score as a Beam pipeline with these pipeline "
                          "options, written with '=': --beam-args=\"--runner=PortableRunner --job_endpoint=HOST:PORT\" "
                          "(--beam-args=\"\": the in-process FnApiRunner); README 'Scale-out'")
    evaluate.set_defaults(func=cmd_evaluate)

    sample = sub.add_parser("sample", help="draw samples from a pushed model")
    sample.add_argument("--model", required=True)
    sample.add_argument("-n", type=int, required=True, help="number of samples")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", required=True, help=".npy, .csv or .png (an image grid, image data only)")
    sample.add_argument("--context", metavar="'c1=V,c2=W'|FILE", help="a conditional model's context: the value "
                        "of each context column, or a .csv/.npy of contexts (-n samples per context; a .csv out "
                        "holds each sample's context after its features)")
    sample.set_defaults(func=cmd_sample)
    for command in (evaluate, sample):  # where a models:/ URI is looked up (`registry.store_uri`)
        command.add_argument("--tracking-uri", help="MLflow store of models:/ URIs (default: MLFLOW_TRACKING_URI, "
                             "else the --output folder's mlflow.db)")
        command.add_argument("--output", help="the run's output folder whose mlflow.db holds models:/ URIs "
                             "(default tfflows_output)")

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
    comp.add_argument("--image", help="container image holding tfflows, fixed tag or digest (cluster.image; default "
                      "tfflows:<version>, the tag infra/k8s/kustomization.yaml deploys)")
    comp.add_argument("--pipeline-root", help="bucket folder for the pipeline's artifacts, gs:// or s3:// "
                      "(cluster.pipeline_root)")
    comp.add_argument("--tracking-uri", help="the cluster's MLflow server, e.g. http://mlflow:5000 (tracking.uri)")
    comp.add_argument("--push-base", help="bucket folder the blessed models are pushed to (push.push_base)")
    comp.add_argument("--cpu", type=float, help="vCPU limit of each step's container (cluster.cpu)")
    comp.add_argument("--memory-gb", type=float, help="memory limit in GB of each step's container (cluster.memory_gb)")
    comp.add_argument("--set", action="append", metavar="KEY=VALUE")
    comp.set_defaults(func=cmd_compile)

    for name, text in (("promote", "move the registry alias (champion) and TF Serving's stable label to a version"),
                       ("rollback", "move the registry alias and TF Serving's stable label back one version")):
        move = sub.add_parser(name, help=text)
        if name == "promote":
            move.add_argument("--version", type=int, required=True, help="registered model version")
        move.add_argument("--config")
        move.add_argument("--output", help="the run's output folder (its mlflow.db and serving/)")
        move.add_argument("--tracking-uri", help="the MLflow store (default: MLFLOW_TRACKING_URI, else the --output "
                          "folder's mlflow.db)")
        move.add_argument("--set", action="append", metavar="KEY=VALUE")
        move.set_defaults(func=cmd_registry)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="show TensorFlow, Beam and MLflow logs and tracebacks instead of a log file")
    return parser


# How a full disk reads along an error's chain: OSError's errno, TensorFlow's and SQLite's words.
_DISK_FULL_WORDS = ("No space left on device", "database or disk is full")


def _noted(message: str, chain: list) -> str:
    """``message`` with what the run undid before failing (the errors' notes, e.g. a push rolled
    back) before its fix."""
    notes = "".join(f"; {note}" for cause in chain for note in getattr(cause, "__notes__", ()))
    head, sep, fix = message.rpartition("; fix: ")
    return f"{head}{notes}{sep}{fix}" if sep else message + notes


def _disk_full(chain: list) -> str | None:
    """The line for a run stopped by a full disk (wherever the write was: a SavedModel, a log, an
    SQLite store), or None."""
    full = [c for c in chain if getattr(c, "errno", None) == errno.ENOSPC or any(w in str(c) for w in _DISK_FULL_WORDS)]
    if not full:
        return None
    # (a copy's destination is its filename2)
    path = next((getattr(c, "filename2", None) or c.filename for c in full if getattr(c, "filename", None)), None)
    if path is None and "; No space left" in str(full[0]):  # TensorFlow's "<path>; No space left on device"
        path = str(full[0]).split("; No space left", 1)[0].strip()
    return (f"{path or 'a file of the run (an SQLite store)'}: no space left on device; fix: free space on "
            "that disk (df -h shows it) or choose another --output, then run again (finished steps are reused)")


def _failure(error: BaseException) -> tuple[int, str]:
    """(exit status, one line) for a failure; the cause is looked for along the exception's chain,
    since TFX and Beam may re-raise a component's error inside their own."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    if (line := _disk_full(chain)) is not None:
        return 2, _noted(line, chain)
    for cause in chain:
        if isinstance(cause, TrainingDivergedError):
            return 3, str(cause)
        if isinstance(cause, RegistrationError):  # a store on this machine it could not write: the user's to fix
            return 2, _noted(str(cause), chain)
        if isinstance(cause, (ConfigError, DataError)):
            return 2, str(cause)
        if isinstance(cause, UnicodeDecodeError):
            return 2, (f"a data file is not UTF-8 text (byte {cause.object[cause.start:cause.start + 1]!r} at "
                       f"offset {cause.start}); fix: save it as UTF-8")
        if isinstance(cause, OSError) and cause.filename and cause.strerror:
            return 2, f"{cause.filename}: {cause.strerror}; fix: check the path, its permissions and free space"
        if isinstance(cause, FileNotFoundError):
            return 2, str(cause)
        if isinstance(cause, KeyboardInterrupt):
            return 130, "interrupted"
    first = str(chain[0]).strip().splitlines()
    return 1, f"internal error: {type(chain[0]).__name__}: {first[0] if first else ''}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if message := missing_extra(args.command):
        print(message, file=sys.stderr)
        return 2
    args.terminal = Terminal(args.command, verbose=args.verbose)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as error:  # every failure ends in one line (traceback: the log)
        status, message = _failure(error)
        args.terminal.failure(error, message)
        return status
    finally:
        args.terminal.close()


if __name__ == "__main__":
    sys.exit(main())
