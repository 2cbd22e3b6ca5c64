"""What the training parts of the objectives share: per-epoch seeds, the tf.data input of an
Examples artifact, its splits, and the validation mean over a dataset."""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from tfflows.components.ingest import read_metadata, split_files
from tfflows.components.transform import dequantize

__all__ = ["ExampleSplits", "RowMean", "epoch_seed", "make_dataset"]

logger = logging.getLogger("tfflows.train")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and noise (epoch 0: validation and batch-norm
    statistics)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**31 - 1)


def make_dataset(files: List[str], event_dim: int, transform, *, batch_size: int, seed: int,
                 num_levels: Optional[int] = None, shuffle_buffer: Optional[int] = None,
                 drop_remainder: bool = False, max_steps: Optional[int] = None,
                 spec: Optional[Dict[str, tf.io.FixedLenFeature]] = None) -> tf.data.Dataset:
    """Batches of model-space ``z`` from gzipped tf.Example files (feature ``x``); with ``spec`` (the
    dataset's `DatasetMetadata.example_spec`, default ``x`` alone), batches ``(z, network context)``
    of a conditional dataset (features ``context`` and/or ``context_categorical``), and ``(z,
    codes[, network context])`` of a dataset with modelled categorical columns (feature
    ``categorical``, strings; codes int32 [B, S] from the graph's vocabularies): each batch is the
    arguments of the model's ``log_prob`` in order.

    Files are read in order; with ``shuffle_buffer`` rows are shuffled with ``seed``; discrete
    data (``num_levels``) gets uniform noise from a stateless seed ``(seed, row index)``, so the
    same seed gives the same batches and another seed fresh noise. The transform graph maps the
    dequantised ``x`` to ``z`` (its log-det, constant in the flow's parameters, is dropped) and the
    raw context to the network's (`load_transform`); the context gets no noise.
    """
    spec = spec or {"x": tf.io.FixedLenFeature([event_dim], tf.float32)}
    conditional = "context" in spec or "context_categorical" in spec
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    ds = ds.map(lambda r: tf.io.parse_single_example(r, spec)).enumerate()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    if num_levels is not None:
        levels = int(num_levels)

        def noisy(i, row):
            return dict(row, x=dequantize(row["x"], levels, tf.stack([tf.constant(seed, tf.int64), i])))

        ds = ds.map(noisy)
    else:
        ds = ds.map(lambda i, row: row)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def model_space(row):
        z, _, *others = transform(row["x"], row.get("context"), row.get("categorical"),
                                  context_categorical=row.get("context_categorical"))
        context, codes = (others[:1], others[1:]) if conditional else ([], others)
        batch = (z, *(tf.cast(c, tf.int32) for c in codes), *context)
        return batch if len(batch) > 1 else z

    ds = ds.map(model_space)
    if max_steps is not None:
        ds = ds.take(max_steps)
    return ds.prefetch(tf.data.AUTOTUNE)


class ExampleSplits:
    """The splits of an Examples artifact: metadata, train and eval files, sizes, MLflow params."""

    def __init__(self, config, examples_uri: Optional[str]):
        if not examples_uri:
            raise ValueError(f"objective {config.objective!r} needs the ingested examples")
        self.config = config
        self.metadata = read_metadata(examples_uri)
        self.event_dim = int(self.metadata.event_dim)
        self.fingerprint = self.metadata.fingerprint
        self.train_files = split_files(examples_uri, "train")
        self.eval_files = split_files(examples_uri, "eval")
        if not self.train_files:
            raise ValueError(f"{examples_uri}: Split-train holds no TFRecord files; ingest again")
        if not self.eval_files:
            logger.warning("%s: no eval split; validation uses the train split", examples_uri)
            self.eval_files = self.train_files
        self.n_train = int(self.metadata.split_sizes.get("train", 0))
        self.params = {"fingerprint": self.fingerprint, "name": self.metadata.name,
                       "event_dim": self.event_dim, "discrete": self.metadata.discrete,
                       "num_levels": self.metadata.num_levels, "train_size": self.n_train,
                       **({"context": ", ".join(self.metadata.context_names or ())} if self.metadata.conditional else {}),
                       **({"categorical": ", ".join(self.metadata.categorical_names or ())}
                          if self.metadata.categorical_names else {})}

    def train_options(self) -> dict:
        """`make_dataset` options of the train split's epochs."""
        c = self.config
        return dict(shuffle_buffer=c.shuffle_buffer or max(self.n_train, 1),
                    drop_remainder=self.n_train >= c.batch_size, max_steps=c.steps_per_epoch)


class RowMean:
    """The mean over every row of ``data`` of ``per_row(model, *batch)`` (float64 sums of one
    tf.function, traced on first use: the model is the same at every validation)."""

    def __init__(self, data: tf.data.Dataset, per_row: Callable):
        self.data, self.per_row = data, per_row
        self._sum: Optional[Callable] = None

    def __call__(self, model) -> float:
        if self._sum is None:
            self._sum = tf.function(lambda *batch: tf.reduce_sum(tf.cast(self.per_row(model, *batch), tf.float64)))
        total, count = 0.0, 0
        for batch in self.data:
            batch = batch if isinstance(batch, tuple) else (batch,)
            total += float(self._sum(*batch).numpy())
            count += int(batch[0].shape[0])
        return total / max(count, 1)
