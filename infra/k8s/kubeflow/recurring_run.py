"""Schedule the compiled tfflows pipeline as a Kubeflow Pipelines recurring run.

The Kubeflow counterpart of ``infra/k8s/pipeline-cronjob.yaml``: instead of one container running
``tfflows run`` with LocalDagRunner, every component runs as its own KFP step.

    tfflows compile --target kubeflow --config config.yaml --out build/tfflows_pipeline.json \\
        --pipeline-root s3://BUCKET/pipeline_root --push-base s3://BUCKET/push \\
        --tracking-uri http://mlflow:5000     # refused if any of them is a path of this machine
    python infra/k8s/kubeflow/recurring_run.py --host http://KFP_HOST \\
        --package build/tfflows_pipeline.json --experiment tfflows --cron "0 30 2 * * *"

KFP cron expressions have six fields, seconds first ("0 30 2 * * *" is 02:30:00 daily).
Authentication to the KFP API is whatever ``kfp.Client`` picks up (in-cluster service account
token, ``KF_PIPELINES_SA_TOKEN_PATH``, kube context); nothing secret is passed on the command line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["check_kfp_cron", "main", "schedule_recurring_run"]


def check_kfp_cron(expression: str) -> str:
    """Return ``expression`` when it has the six fields KFP expects, else raise ValueError."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"`cron` must have 6 fields (seconds minutes hours day month weekday), "
            f"but is {expression!r} ({len(fields)} fields)"
        )
    return expression


def schedule_recurring_run(
    client: Any,
    *,
    package_path: str,
    experiment_name: str,
    job_name: str,
    cron: str,
    params: dict[str, str] | None = None,
    max_concurrency: int = 1,
) -> Any:
    """Create (or reuse) the experiment and a recurring run of the compiled pipeline.

    Args:
        client: a ``kfp.Client`` (any object with its ``get_experiment``/``create_experiment``/
            ``create_recurring_run`` methods).
        package_path: pipeline-spec JSON/YAML written by ``tfflows compile --target kubeflow``.
        experiment_name: KFP experiment holding the runs.
        job_name: name of the recurring run.
        cron: six-field KFP cron expression.
        params: pipeline parameters.
        max_concurrency: runs allowed at once (1: never overlap).
    """
    check_kfp_cron(cron)
    if max_concurrency < 1:
        raise ValueError(f"`max_concurrency` must be >= 1, but is {max_concurrency}")
    try:
        experiment = client.get_experiment(experiment_name=experiment_name)
    except Exception:  # noqa: BLE001 - kfp raises ValueError or an ApiException when absent
        experiment = client.create_experiment(name=experiment_name)
    return client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=job_name,
        cron_expression=cron,
        max_concurrency=max_concurrency,
        no_catchup=True,
        pipeline_package_path=package_path,
        params=params or {},
        enabled=True,
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui")
    parser.add_argument("--namespace", default="kubeflow")
    parser.add_argument("--package", required=True, help="compiled pipeline spec (JSON/YAML)")
    parser.add_argument("--experiment", default="tfflows")
    parser.add_argument("--job-name", default="tfflows-daily")
    parser.add_argument("--cron", default="0 30 2 * * *", help="six-field KFP cron expression")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter"
    )
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--param must be KEY=VALUE, but is {item!r}")
        params[key] = value
    args.params = params
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    import kfp  # imported here: only this entry point needs the KFP SDK

    client = kfp.Client(host=args.host, namespace=args.namespace)
    run = schedule_recurring_run(
        client,
        package_path=args.package,
        experiment_name=args.experiment,
        job_name=args.job_name,
        cron=args.cron,
        params=args.params,
    )
    print(f"recurring run {getattr(run, 'recurring_run_id', run)} scheduled: {args.cron}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
