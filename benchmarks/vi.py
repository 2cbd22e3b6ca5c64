"""Variational inference benchmark: flows fitted to U1-U4 by reverse KL, and a VAE with IAF posterior.

(a) Planar (K=16, 32), IAF and Real NVP flows fitted to the four potentials of thesis table 3.1
    (Rezende & Mohamed 2015) by minimising KL(q || p) with Adam. The targets are the product's
    (`models.targets.load_target`: times the soft box of half-width 4, which gives U2-U4, improper
    along z1, a normaliser). Prints ESS / n (w = p~/q, 20,000 samples), E_q[log q - log p~] and
    KL(q || p) = E_q[log q - log p~] + log Z with log Z by quadrature on a grid; writes one PNG per
    target (target density next to each fitted density) to --out.
(b) VAE (MLP encoder/decoder, Bernoulli likelihood) with a diagonal-Gaussian posterior vs a gated
    IAF posterior (Kingma et al. 2016, Algorithm 1) on dynamically binarised data: sklearn's 8x8
    digits, and the MNIST test set (the only MNIST split kept offline: 8,000 images train, 2,000
    test). Prints test ELBO and importance-sampled log-likelihood (K samples, the paper uses 128).

Run:  nice -n 10 .venv/bin/python -m benchmarks.vi [--vi-steps 2000] [--vae-steps 2000] [--out docs/vi]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models import build_flow, targets
from tfflows.models.vae import IAFVAE
from tfflows.models.vi import fit_unnormalized, importance_diagnostics

FLOWS = {
    "planar K=16": lambda: build_flow("planar", 2, num_layers=16),
    "planar K=32": lambda: build_flow("planar", 2, num_layers=32),
    "IAF (4x64)": lambda: build_flow("iaf", 2, num_layers=4, hidden_units=[64], batch_norm=False),
    "Real NVP (8x64)": lambda: build_flow("realnvp", 2, num_layers=8, hidden_units=[64], batch_norm=False),
}


def grid_log_normalizer(log_density_fn, limit=8.0, n=800) -> float:
    """log Z = log ∫ p~ by the midpoint rule on [-limit, limit]²."""
    h = 2 * limit / n
    c = -limit + h * (np.arange(n) + 0.5)
    z1, z2 = np.meshgrid(c, c)
    log_p = log_density_fn(tf.constant(np.stack([z1.ravel(), z2.ravel()], 1), tf.float64)).numpy()
    return float(np.logaddexp.reduce(log_p) + 2 * math.log(h))


def plot_fits(name, fitted: dict, folder: str, limits=(-4.0, 4.0), n=120) -> str:
    """PNG of the target density next to each fitted density on a grid; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"target exp(-{name})", targets.load_target(name)[0])] + [(k, f.log_prob) for k, f in fitted.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (title, fn) in zip(axes, panels):
        z1, z2, p = targets.density_grid(fn, limits, n)
        ax.pcolormesh(z1, z2, p, shading="auto", cmap="viridis")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal")
    fig.tight_layout()
    path = os.path.join(folder, f"{name}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def run_targets(steps, out, names):
    os.makedirs(out, exist_ok=True)
    print(f"== (a) reverse KL, {steps} steps, batch 128, Adam 1e-3 (planar 5e-3), annealing over {steps // 2} steps")
    print("   (targets times the soft box of half-width 4; log Z by quadrature on [-8, 8]²)")
    print(f"{'target':6s} {'model':16s} {'ESS/n':>7s} {'E[logq-logp~]':>14s} {'KL(q||p)':>9s} {'time':>6s}")
    for name in names:
        log_p = targets.load_target(name)[0]
        log_z = grid_log_normalizer(log_p)
        fitted = {}
        for label, make in FLOWS.items():
            flow, t = make(), time.time()
            lr = 5e-3 if label.startswith("planar") else 1e-3
            fit_unnormalized(log_p, flow, steps=steps, batch=128, lr=lr, seed=1, anneal_steps=steps // 2,
                             clipnorm=10.0, log_every=steps)
            d = importance_diagnostics(log_p, flow, n=20000, seed=99)
            print(f"{name:6s} {label:16s} {d['ess']:7.3f} {d['kl_minus_log_z']:14.3f} "
                  f"{d['kl_minus_log_z'] + log_z:9.3f} {time.time() - t:5.0f}s",
                  flush=True)
            fitted[label] = flow
        print(f"       plot: {plot_fits(name, fitted, out)}", flush=True)


def load_vae_data(name):
    """(train [N, D] in [0, 1], test [M, D] binarised once with a fixed seed)."""
    rng = np.random.default_rng(0)
    if name == "digits":
        from sklearn.datasets import load_digits

        x = load_digits().data.astype("float32") / 16.0
        n_train = 1500
    else:
        from tfflows.components.ingest.loaders import default_mnist_dir, read_idx

        x = read_idx(str(default_mnist_dir() / "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).astype("float32") / 255
        n_train = 8000
    x = x[rng.permutation(len(x))]
    train, test = x[:n_train], x[n_train:]
    return train, (rng.random(test.shape) < test).astype("float32")


def run_vae(steps, k, datasets):
    print(f"\n== (b) VAE, dynamically binarised, {steps} steps of batch 100, Adam 1e-3; test IS log-lik with K={k}")
    print(f"{'data':7s} {'posterior':24s} {'test ELBO':>10s} {'test log p(x)':>14s} {'time':>6s}")
    for data in datasets:
        train, test = load_vae_data(data)
        test = test[:500]
        latent, hidden = (8, [128]) if data == "digits" else (16, [300])
        batches = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=0).repeat().batch(100)
        for t_steps in (0, 2):
            t = time.time()
            vae = IAFVAE(train.shape[1], latent, hidden, num_iaf_steps=t_steps, iaf_hidden_units=[64, 64],
                         context_dim=16, forget_bias=1.5, dynamic_binarization=True, seed=0)
            vae.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
            vae.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
            elbo, ll = [], []
            for i in range(0, len(test), 50):
                xb = tf.constant(test[i:i + 50])
                elbo.append(vae.elbo(xb, k=1, seed=i).numpy())
                ll.append(vae.importance_log_likelihood(xb, k, seed=i + 1).numpy())
            elbo, ll = np.concatenate(elbo), np.concatenate(ll)
            label = "diagonal Gaussian" if t_steps == 0 else f"IAF (T={t_steps}, MADE 64-64)"
            se = 2 * ll.std() / math.sqrt(len(ll))
            print(f"{data:7s} {label:24s} {elbo.mean():10.2f} {ll.mean():8.2f} ± {se:.2f} {time.time() - t:5.0f}s",
                  flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vi-steps", type=int, default=2000)
    parser.add_argument("--vae-steps", type=int, default=2000)
    parser.add_argument("--k", type=int, default=128, help="importance samples for the test log-likelihood")
    parser.add_argument("--targets", nargs="*", default=list(targets.TARGETS))
    parser.add_argument("--datasets", nargs="*", default=["digits", "mnist"])
    parser.add_argument("--out", default="docs/vi")
    args = parser.parse_args()
    if args.vi_steps > 0:
        run_targets(args.vi_steps, args.out, args.targets)
    if args.vae_steps > 0:
        run_vae(args.vae_steps, args.k, args.datasets)


if __name__ == "__main__":
    main()
