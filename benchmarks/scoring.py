"""Scoring a large table: rows/s and peak memory of `tfflows evaluate --scores`, beside TFP's MAF.

    python -m benchmarks.scoring [--rows 10000000] [--dim 43] [--hidden 512] [--layers 5]
                                 [--beam [--beam-args="--runner=..."]]

Writes N random rows at D columns to a .npy (in chunks), then scores them in two fresh processes:
- ours: `pipeline.serving.evaluate_saved_model` on the exported SavedModel (5-layer MAF, the
  masks baked in), streaming the file in chunks and writing the scores .npy, as the CLI does;
- TFP: `tfd.TransformedDistribution` of `tfb.MaskedAutoregressiveFlow` layers (same shape,
  `benchmarks.speed.TFPFlow`), its `log_prob` as a tf.function on the same chunks and batches;
- Beam (with ``--beam``): `evaluate_saved_model` with ``beam_args`` (`pipeline.beam_scoring`: the
  chunks read and scored by RunInference on the runner ``--beam-args`` names, default the
  in-process FnApiRunner), the same export, chunks and scores file as "ours". Its peak memory is
  this process's (the driver and, on FnApiRunner, the worker); workers of other runners run in
  processes of their own.
Untrained weights: the cost of a log_prob does not depend on their values. Peak memory is the
process's maximum resident set (ru_maxrss), printed beside the resident set before scoring; it
counts the touched pages of the memory-mapped input (page cache the kernel may reclaim). "peak
anon MB" excludes them: the largest anonymous resident set (``RssAnon``, sampled every 20 ms),
the memory the scoring itself holds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BATCH, CHUNK = 4096, 65536


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


class _PeakAnon:
    """The largest ``RssAnon`` seen while the ``with`` block runs (sampled by a thread)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb("RssAnon"))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb("RssAnon"))


def _side(which: str, rows: str, work: str, dim: int, hidden: int, layers: int, beam_args: str) -> dict:
    import tensorflow as tf

    if which in ("ours", "beam"):
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
        with _PeakAnon() as anon:
            evaluate_saved_model(export, rows, os.path.join(work, "scores.npy"), batch_size=BATCH, chunk_rows=CHUNK,
                                 beam_args=shlex.split(beam_args) if which == "beam" else None)
    else:
        from benchmarks.speed import TFPFlow
        from tfflows.pipeline.serving import iter_row_chunks, match_columns

        log_prob = tf.function(TFPFlow(dim, hidden, layers).maf_dist.log_prob,
                               input_signature=[tf.TensorSpec([None, dim], tf.float32)])
        log_prob(tf.zeros([1, dim]))
        before = _rss_mb()
        start = time.perf_counter()
        with _PeakAnon() as anon:
            for _, chunk in iter_row_chunks(rows, match_columns(rows, [f"x{i}" for i in range(dim)]), CHUNK):
                for i in range(0, len(chunk), BATCH):
                    log_prob(tf.constant(chunk[i:i + BATCH])).numpy()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "rss_before_mb": before, "peak_rss_mb": peak, "peak_anon_mb": anon.peak}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=43)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--beam", action="store_true", help="also score through the Beam pipeline")
    parser.add_argument("--beam-args", default="--runner=FnApiRunner",
                        help="Beam pipeline options of --beam, as one string (write --beam-args=\"...\")")
    parser.add_argument("--side", choices=["ours", "beam", "tfp"], help=argparse.SUPPRESS)  # one side, in a child
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(_side(args.side, args.data, args.work, args.dim, args.hidden, args.layers, args.beam_args)))
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
              f"chunks of {CHUNK} rows, batches of {BATCH}, {os.cpu_count()} CPUs"
              + (f"; Beam: {args.beam_args}" if args.beam else ""))
        print(f"{'':6} {'rows/s':>10} {'seconds':>9} {'RSS before MB':>14} {'peak RSS MB':>12} {'peak anon MB':>13}")
        for side in ("ours", "tfp", *(["beam"] if args.beam else [])):
            out = subprocess.run([sys.executable, "-m", "benchmarks.scoring", "--side", side, "--data", rows,
                                  "--work", work, "--dim", str(args.dim), "--hidden", str(args.hidden),
                                  "--layers", str(args.layers), f"--beam-args={args.beam_args}"],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = {"ours": "ours", "tfp": "TFP", "beam": "Beam"}[side]
            print(f"{label:6} {args.rows / r['seconds']:>10,.0f} {r['seconds']:>9.1f} {r['rss_before_mb']:>14.0f} "
                  f"{r['peak_rss_mb']:>12.0f} {r['peak_anon_mb']:>13.0f}")


if __name__ == "__main__":
    main()
