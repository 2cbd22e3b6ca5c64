"""Conditional KL gap of every conditional flow kind on a density with an exact log p(x | c).

Data: `models.conditional_targets.ConditionalBanana` (x in R^2 given c ~ U(-1, 1): a banana that
turns, bends and stretches with c), train / eval / test pairs (x, c) drawn from p(c) p(x | c). Each
conditional kind is trained on (x, c) with `benchmarks.quality.train_model` (early stopping on the
eval split, best epoch kept, batch norm with train-set statistics) and scored on the test pairs by
the conditional KL gap

    E_c E_{x|c} [log p(x | c) - log q(x | c)]  ~=  mean_i [log p(x_i | c_i) - log q(x_i | c_i)],

± 2 standard errors of the per-pair differences (paired: both densities score the same pairs, so
the spread of log p itself cancels). It is >= 0 up to that error, and 0 only for q = p. Data are
modelled as they are (no standardisation), so q's log-density is in the data space already.

The row "MAF (5), unconditional" fits q(x) and ignores c: its gap
E_c KL(p(. | c) || q) = KL + I(x; c) shows what conditioning has to recover. Kinds without a
conditional version are listed with the reason and not trained.

Run:
  python -m benchmarks.conditional --max-minutes 1 --hidden 32
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.quality import MODELS, Prepared, _fmt, _log_prob, train_model

__all__ = ["KL_MODELS", "main"]

# One conditional model per conditional kind (the spline variants are maf and realnvp with spline
# transformers), the quality benchmark's configurations; "maf5_marginal" ignores the context.
KL_MODELS: Dict[str, dict] = {
    **{key: dict(MODELS[key], conditional=True) for key in (
        "made", "made_mog", "maf5", "realnvp5", "haf5_50", "nice4", "spline_maf5", "spline_realnvp5")},
    "iaf5": dict(label="IAF (5)", kind="iaf", num_layers=5, conditional=True),
    "maf5_marginal": dict(MODELS["maf5"], label="MAF (5), unconditional"),
}


def prepare(args):
    """(train / eval / test pairs as a `quality.Prepared` with the identity transform, the target)."""
    from tfflows.components.transform import Preprocessing
    from tfflows.models.conditional_targets import ConditionalBanana

    target = ConditionalBanana()
    rng = np.random.default_rng(args.seed + 1)
    sizes = dict(train=args.train, eval=max(args.train // 5, 1), test=args.test)
    pairs = {name: target.sample_joint(n, rng) for name, n in sizes.items()}
    return Prepared("conditional_banana", {name: x for name, (x, _) in pairs.items()}, False, None,
                    Preprocessing.identity(target.event_dim), contexts={name: c.astype(np.float32) for name, (_, c) in pairs.items()},
                    note="ConditionalBanana: x in R^2 given c ~ U(-1, 1)"), target


def refused_kinds() -> List[str]:
    """One line per flow kind that refuses a context: the kind and `FlowConfig`'s own reason."""
    from tfflows.models.kinds import FLOW_KINDS, FlowConfig

    refused = []
    for kind in FLOW_KINDS:
        try:
            FlowConfig(kind=kind, event_dim=2, context_dim=1)
        except ValueError as error:
            refused.append(f"{kind}: {error}")
    return refused


def format_table(rows: List[dict]) -> str:
    lines = ["| model | kind | KL gap E_c E_x|c [log p - log q] (nats, ± 2 s.e.) | test log q(x|c) (nats) | params "
             "| train s | epochs (best) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['kind']} | {_fmt(r['kl_gap'], r['kl_gap_2se'], 3)} | "
                     f"{_fmt(r['test_ll'], r['test_ll_2se'], 3)} | {r['params']} | {r['train_seconds']:.0f} | "
                     f"{r['epochs']} ({r['best_epoch']}) |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conditional", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(KL_MODELS), choices=list(KL_MODELS))
    parser.add_argument("--train", type=int, default=5000, help="train pairs (eval: a fifth as many)")
    parser.add_argument("--test", type=int, default=5000, help="test pairs")
    parser.add_argument("--hidden", type=int, default=32, help="width H of every MADE / coupling network")
    parser.add_argument("--hidden-layers", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=1.0, help="training time budget per model")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every model")
    parser.add_argument("--l2", type=float, default=1e-6)
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args(argv)
    args.lr_scale = None  # train_model's options that this benchmark fixes
    return args


def main(argv: Optional[Sequence[str]] = None, log=print) -> dict:
    """Trains and scores every model of `--models`; prints and returns the table and rows."""
    from tfflows.components.transform.conversions import mean_and_two_se, paired_difference

    args = parse_args(argv)
    data, target = prepare(args)
    x, c = data.splits["test"], data.contexts["test"]
    true_ll = target.log_prob(x, c)
    entropy, entropy_2se = mean_and_two_se(-true_ll)
    log(f"{data.note}; splits { {k: len(v) for k, v in data.splits.items()} }; "
        f"H(x | c) = {entropy:.3f} ± {entropy_2se:.3f} nats on the test pairs")
    for line in refused_kinds():
        log(f"  {line}")
    rows = []
    for key in args.models:
        spec = KL_MODELS[key]
        log(f"  training {spec['label']} ...")
        start = time.time()
        fit = train_model(spec, data, args, log=log)
        ll = _log_prob(fit["model"], x.astype(np.float32), context=c if spec.get("conditional") else None)
        gap, gap_2se = paired_difference(true_ll, ll)
        test_ll, test_ll_2se = mean_and_two_se(ll)
        rows.append(dict(model=spec["label"], key=key, kind=spec["kind"] + (
            f" ({spec['options']['transformer']})" if "options" in spec else ""), kl_gap=gap, kl_gap_2se=gap_2se,
            test_ll=test_ll, test_ll_2se=test_ll_2se, params=fit["params"], train_seconds=time.time() - start,
            epochs=fit["epochs"], best_epoch=fit["best_epoch"]))
        log(f"    {spec['label']}: KL gap {_fmt(gap, gap_2se, 3)} nats")
    table = format_table(rows)
    log("\n" + table)
    return dict(entropy=entropy, entropy_2se=entropy_2se, refused=refused_kinds(), rows=rows, table=table)


if __name__ == "__main__":
    main(sys.argv[1:])
