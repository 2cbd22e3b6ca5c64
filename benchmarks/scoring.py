"""Scoring a large table: rows/s and peak memory of `tfflows evaluate --scores`, beside TFP's MAF.

    python -m benchmarks.scoring [--rows 10000000] [--dim 43] [--hidden 512] [--layers 5]

Writes N random rows at D columns to a .npy (in chunks), then scores them in two fresh processes:
- ours: `pipeline.serving.evaluate_saved_model` on the exported SavedModel (5-layer MAF, the
  masks baked in), streaming the file in chunks and writing the scores .npy, as the CLI does;
- TFP: `tfd.TransformedDistribution` of `tfb.MaskedAutoregressiveFlow` layers (same shape,
  `benchmarks.speed.TFPFlow`), its `log_prob` as a tf.function on the same chunks and batches.
Untrained weights: the cost of a log_prob does not depend on their values. Peak memory is the
process's maximum resident set (ru_maxrss), printed beside the resident set before scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH, CHUNK = 4096, 65536


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _side(which: str, rows: str, work: str, dim: int, hidden: int, layers: int) -> dict:
    import tensorflow as tf

    if which == "ours":
        from tfflows.components.flow_artifact import save_flow
        from tfflows.components.push.export import export_saved_model
        from tfflows.models import build_flow
        from tfflows.pipeline.serving import evaluate_saved_model

        flow = build_flow("maf", dim, num_layers=layers, hidden_units=[hidden], batch_norm=False)
        flow.log_prob(tf.zeros([1, dim]))
        save_flow(flow, os.path.join(work, "model"), {"epochs": 0})
        export = export_saved_model(os.path.join(work, "model"), None, None, os.path.join(work, "export"))
        before = _rss_mb()
        start = time.perf_counter()
        evaluate_saved_model(export, rows, os.path.join(work, "scores.npy"), batch_size=BATCH, chunk_rows=CHUNK)
    else:
        from benchmarks.speed import TFPFlow
        from tfflows.pipeline.serving import iter_row_chunks

        log_prob = tf.function(TFPFlow(dim, hidden, layers).maf_dist.log_prob,
                               input_signature=[tf.TensorSpec([None, dim], tf.float32)])
        log_prob(tf.zeros([1, dim]))
        before = _rss_mb()
        start = time.perf_counter()
        for _, chunk in iter_row_chunks(rows, dim, CHUNK):
            for i in range(0, len(chunk), BATCH):
                log_prob(tf.constant(chunk[i:i + BATCH])).numpy()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=43)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--side", choices=["ours", "tfp"], help=argparse.SUPPRESS)  # one side, in a child
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(_side(args.side, args.data, args.work, args.dim, args.hidden, args.layers)))
        return
    with tempfile.TemporaryDirectory() as work:
        rows = os.path.join(work, "rows.npy")
        table = np.lib.format.open_memmap(rows, mode="w+", dtype=np.float32, shape=(args.rows, args.dim))
        rng = np.random.default_rng(0)
        for s in range(0, args.rows, 1_000_000):
            table[s:s + 1_000_000] = rng.normal(size=(min(1_000_000, args.rows - s), args.dim))
        table.flush()
        del table
        size_mb = os.path.getsize(rows) / 2**20
        print(f"{args.rows} rows x D={args.dim} ({size_mb:.0f} MB .npy), MAF {args.layers} layers x H={args.hidden}, "
              f"chunks of {CHUNK} rows, batches of {BATCH}, {os.cpu_count()} CPUs")
        print(f"{'':6} {'rows/s':>10} {'seconds':>9} {'RSS before MB':>14} {'peak RSS MB':>12}")
        for side in ("ours", "tfp"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.scoring", "--side", side, "--data", rows,
                                  "--work", work, "--dim", str(args.dim), "--hidden", str(args.hidden),
                                  "--layers", str(args.layers)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = "ours" if side == "ours" else "TFP"
            print(f"{label:6} {args.rows / r['seconds']:>10,.0f} {r['seconds']:>9.1f} {r['rss_before_mb']:>14.0f} "
                  f"{r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
