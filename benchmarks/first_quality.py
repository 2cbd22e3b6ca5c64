"""First quality check of the flow library on real data: MAF, Real NVP and HAF against a Gaussian.

Datasets (both bundled with scikit-learn, offline):
  digits: `load_digits`, 1,797 8x8 images with 17 grey levels (D = 64). Dequantised with fresh
          uniform noise every epoch, scaled to (0, 1) and logit-transformed with lambda = 1e-6, as
          the MAF paper does for MNIST; log-likelihoods are reported in that logit space.
  moons:  `make_moons(3000, noise=0.1)`, standardised with training statistics (D = 2).
Splits are 70% / 15% / 15% (seeded). The Gaussian baseline is the maximum-likelihood full-covariance
Gaussian of the training split. Test log-likelihoods are mean ± 2 standard errors, in nats.

Run:  .venv/bin/python benchmarks/first_quality.py [--epochs N] [--datasets digits moons]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.datasets import load_digits, make_moons

from models import build_flow

LAMBDA = 1e-6
MODELS = {
    "MAF (5)": dict(kind="maf", num_layers=5),
    "Real NVP (5)": dict(kind="realnvp", num_layers=5),
    "HAF (5)": dict(kind="haf", num_layers=5),
}


def logit_space(x, levels):
    """z = logit(lambda + (1 - 2 lambda) x / levels), NumPy or TensorFlow input."""
    p = LAMBDA + (1 - 2 * LAMBDA) * x / levels
    return tf.math.log(p) - tf.math.log1p(-p)


def split(data, seed=0):
    idx = np.random.default_rng(seed).permutation(len(data))
    n_train, n_val = int(0.7 * len(data)), int(0.15 * len(data))
    return data[idx[:n_train]], data[idx[n_train : n_train + n_val]], data[idx[n_train + n_val :]]


def load(name):
    """(train_fn, val, test, hidden units): train_fn() gives one epoch of fresh training batches."""
    if name == "digits":
        levels = 17
        train, val, test = split(load_digits().data.astype("float32"))
        rng = np.random.default_rng(1)
        val, test = (logit_space(part + rng.uniform(size=part.shape), levels).numpy().astype("float32")
                     for part in (val, test))

        def train_batches():
            ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train))
            # Fresh dequantisation noise every epoch.
            return ds.map(lambda x: logit_space(x + tf.random.uniform(tf.shape(x)), levels)).batch(100)

        return train_batches, val, test, [128]
    data = make_moons(3000, noise=0.1, random_state=0)[0].astype("float32")
    train, val, test = split(data)
    mean, std = train.mean(0), train.std(0)
    train, val, test = ((part - mean) / std for part in (train, val, test))
    return (lambda: tf.data.Dataset.from_tensor_slices(train).shuffle(len(train)).batch(100)), val, test, [64]


def mean_and_two_se(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), 2 * values.std(ddof=1) / np.sqrt(len(values))


def gaussian_test_ll(train, test):
    mean, cov = train.mean(0), np.cov(train, rowvar=False) + 1e-6 * np.eye(train.shape[1])
    diff = test - mean
    sign, logdet = np.linalg.slogdet(cov)
    maha = np.sum(diff @ np.linalg.inv(cov) * diff, axis=1)
    return -0.5 * (maha + logdet + train.shape[1] * np.log(2 * np.pi))


def train_flow(options, train_batches, val, hidden, epochs, patience):
    model = build_flow(event_dim=val.shape[1], hidden_units=hidden, l2=1e-6, **options)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    best, best_weights, waited = -np.inf, None, 0
    for _ in range(epochs):
        model.fit(train_batches(), epochs=1, verbose=0)  # batch norm takes the train-set statistics
        val_ll = float(np.mean(model.log_prob(val)))
        if val_ll > best:
            best, best_weights, waited = val_ll, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best_weights)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60, help="maximum epochs per model (default 60)")
    parser.add_argument("--patience", type=int, default=8, help="early-stopping patience in epochs (default 8)")
    parser.add_argument("--datasets", nargs="+", default=["digits", "moons"], choices=["digits", "moons"])
    args = parser.parse_args(argv)
    tf.random.set_seed(0)
    rows = []
    for name in args.datasets:
        train_batches, val, test, hidden = load(name)
        train_sample = np.concatenate([b.numpy() for b in train_batches()])
        rows.append((name, "Gaussian", *mean_and_two_se(gaussian_test_ll(train_sample, test)), 0.0))
        for label, options in MODELS.items():
            start = time.time()
            model = train_flow(options, train_batches, val, hidden, args.epochs, args.patience)
            ll = model.log_prob(test).numpy()
            rows.append((name, label, *mean_and_two_se(ll), time.time() - start))
            print(f"  {name:7s} {label:13s} {rows[-1][2]:9.2f} ± {rows[-1][3]:.2f}  ({rows[-1][4]:.0f} s)", flush=True)
    print("\n| dataset | model | test log-likelihood (nats) | train time (s) |\n|---|---|---|---|")
    for name, label, mean, se, seconds in rows:
        print(f"| {name} | {label} | {mean:.2f} ± {se:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
