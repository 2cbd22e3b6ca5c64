"""Density-estimation quality of every flow of the MAF paper and the HAF thesis, on one dataset.

Trains the papers' configurations with the papers' recipe and scores the test split:

  - Gaussian: full-covariance maximum-likelihood Gaussian of the (model-space) train split,
    closed form, no training.
  - MADE (1 x H), MADE MoG (C = 10), MAF (5), MAF (10), MAF MoG (5), Real NVP (5), Real NVP (10).
  - HAF (5) at about 50 % and 70 % of the MAF width (thesis table 6.1: H_HAF = 0.5 H and 0.7 H,
    e.g. 1x550 / 1x700 against MAF's 1x1024 on MNIST).
  - Spline MAF (5) and Spline Real NVP (5): the same flows with rational-quadratic spline
    transformers (Durkan et al. 2019; 8 bins on [-3, 3]); NICE (4): four additive couplings and
    a diagonal scaling (Dinh et al. 2015), no batch norm.
  - Image data only (datasets with an image shape: digits, mnist, cifar10): Glow (L=2, K=4, 64
    hidden channels; "glow_prior" adds Glow's learnt prior of the factored-out channels) and Real NVP image (L=2, 3 couplings per mask type, 2 residual blocks of 32
    channels: its full-resolution 3x3 ResNets cost the most), multi-scale convolutional flows
    (Kingma & Dhariwal 2018; Dinh et al. 2017 section 3.6), learning rate 1e-3; `--hidden`,
    `--hidden-layers` and `--no-batch-norm` do not apply to them. On a CPU their first epoch
    includes about a minute of graph tracing, so give them ``--max-minutes 3`` or more.

Recipe (defaults; MAF paper section 4 and appendix, thesis chapter 7): Adam with learning rate
1e-4 (MADE and MADE MoG 1e-3), L2 1e-6 on all kernels, batch 100, batch norm between layers
and before the base (MAF, Real NVP, HAF) with full-train-set statistics at evaluation, early
stopping on the validation log-likelihood with patience 30, best epoch's weights kept.
``--max-epochs`` and ``--max-minutes`` (per model, checked after each epoch) bound the run for
a CPU.

Data: any dataset of the ingest component (``components.ingest.loaders.load_in_memory``:
moons, digits, mnist, npy, power, gas, hepmass, miniboone, bsds300, ...) transformed as the
transform component does (discrete data: fresh uniform dequantisation every epoch, then
``z = logit(lam + (1 - 2 lam) x / L)``; continuous data: standardisation, with the paper's
statistics for the benchmarks). Log-likelihoods are reported in the model space (logit space for
images, standardised space for tabular data), as the papers do, plus bits/dim for discrete data
(MAF paper appendix E.2, eq. 17). Error bars: 2 standard errors over the test examples.

Synthetic ``gmm``: a Gaussian mixture (``--gmm-dim``, ``--gmm-components``) generated here with
an exact log-density. Its differential entropy H = -E log p(x) is estimated by Monte Carlo with
``--entropy-samples`` fresh draws, and each model's KL gap

    KL(p || q) ~= test NLL - H = -mean_test log q(x) - H      (data space, nats)

is reported (the test NLL includes the standardisation's log-determinant). The "true density"
row scores the generating mixture itself (its gap is 0 up to Monte Carlo error).

Paired comparisons: ``--pairs spline_maf5:maf5`` prints the mean per-example difference of test
log-likelihoods, A - B, ± 2 standard errors of those differences. Both models score the same
test points, so the test set's own spread (most of each row's error bar) cancels: this is the
error bar that says whether A beats B, which overlapping row error bars cannot.

Class-conditional models (MAF paper, Table 5): ``--context label`` gives every digits or MNIST
image its class as a one-hot context (y in R^10, labels matched to the ingested rows image by
image), and the keys ending in ``_cond`` (e.g. ``maf5_cond``, ``made_mog_cond``) train the same
configuration as p(x | y). ``--pairs maf5_cond:maf5`` then reports conditional minus
unconditional test log-likelihood per image, paired. Both score the same dequantised test images.

Run:
  python -m benchmarks.quality --dataset digits --context label --hidden 128 --max-minutes 1 \
      --models made_mog made_mog_cond maf5 maf5_cond --pairs made_mog_cond:made_mog maf5_cond:maf5
  python -m benchmarks.quality --dataset moons --max-minutes 1 --hidden 64
  python -m benchmarks.quality --dataset gmm --gmm-dim 5 --models gaussian maf5 haf5_50
  python -m benchmarks.quality --dataset mnist --max-minutes 3 --hidden 256 \
      --models gaussian made maf5 realnvp5 haf5_50 haf5_70 --out mnist.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from tfflows.components.transform import Preprocessing

__all__ = ["MODELS", "PUBLISHED", "main", "make_gmm", "prepare_data", "gaussian_log_prob", "train_model"]

# key -> (label, build_flow options with H the MAF width, learning rate, width factor, the kind's own options)
MODELS: Dict[str, dict] = {
    "gaussian": dict(label="Gaussian"),
    "made": dict(label="MADE", kind="made", lr=1e-3),
    "made_mog": dict(label="MADE MoG", kind="made_mog", num_components=10, lr=1e-3),
    "realnvp5": dict(label="Real NVP (5)", kind="realnvp", num_layers=5),
    "realnvp10": dict(label="Real NVP (10)", kind="realnvp", num_layers=10),
    "maf5": dict(label="MAF (5)", kind="maf", num_layers=5),
    "maf10": dict(label="MAF (10)", kind="maf", num_layers=10),
    "maf_mog5": dict(label="MAF MoG (5)", kind="maf", num_layers=5, num_components=10),
    "haf5_50": dict(label="HAF (5) 50%", kind="haf", num_layers=5, width=0.5),
    "haf5_70": dict(label="HAF (5) 70%", kind="haf", num_layers=5, width=0.7),
    # Neural spline flows (Durkan et al. 2019): K = 8 bins on [-3, 3], the kinds' own options.
    "spline_maf5": dict(label="Spline MAF (5)", kind="maf", num_layers=5, options=dict(transformer="spline")),
    "spline_realnvp5": dict(label="Spline Real NVP (5)", kind="realnvp", num_layers=5,
                            options=dict(transformer="spline")),
    "nice4": dict(label="NICE (4)", kind="nice", num_layers=4),
    # Multi-scale image flows (image datasets only): the kinds' own options; `architecture` labels the table row.
    "glow": dict(label="Glow (L=2, K=4)", kind="glow", lr=1e-3, architecture="2 levels × 4 steps, 64 ch",
                 options=dict(levels=2, steps_per_level=4, hidden_channels=64)),
    "glow_prior": dict(label="Glow + learnt prior", kind="glow", lr=1e-3,
                       architecture="2 levels × 4 steps, 64 ch, learnt prior",
                       options=dict(levels=2, steps_per_level=4, hidden_channels=64, learnt_prior=True)),
    "realnvp_image": dict(label="Real NVP image (L=2)", kind="realnvp_image", lr=1e-3,
                          architecture="2 levels × 3+3 couplings, 2 res. blocks, 32 ch",
                          options=dict(levels=2, couplings_per_level=3, residual_blocks=2, hidden_channels=32)),
}
ALL_MODELS = list(MODELS)
# Class-conditional versions of the MAF paper's flows (Table 5), for `--context label`.
CONDITIONAL_MODELS = {f"{key}_cond": dict(MODELS[key], label=MODELS[key]["label"] + " conditional", conditional=True)
                      for key in ("made", "made_mog", "realnvp5", "realnvp10", "maf5", "maf10", "maf_mog5")}
MODELS.update(CONDITIONAL_MODELS)

_T1 = {  # MAF paper Table 1 (tabular), test log-likelihood in nats
    "Gaussian": ("-7.74 ± 0.02", "-3.58 ± 0.75", "-27.93 ± 0.02", "-37.24 ± 1.07", "96.67 ± 0.25"),
    "MADE": ("-3.08 ± 0.03", "3.56 ± 0.04", "-20.98 ± 0.02", "-15.59 ± 0.50", "148.85 ± 0.28"),
    "MADE MoG": ("0.40 ± 0.01", "8.47 ± 0.02", "-15.15 ± 0.02", "-12.27 ± 0.47", "153.71 ± 0.28"),
    "Real NVP (5)": ("-0.02 ± 0.01", "4.78 ± 1.80", "-19.62 ± 0.02", "-13.55 ± 0.49", "152.97 ± 0.28"),
    "Real NVP (10)": ("0.17 ± 0.01", "8.33 ± 0.14", "-18.71 ± 0.02", "-13.84 ± 0.52", "153.28 ± 1.78"),
    "MAF (5)": ("0.14 ± 0.01", "9.07 ± 0.02", "-17.70 ± 0.02", "-11.75 ± 0.44", "155.69 ± 0.28"),
    "MAF (10)": ("0.24 ± 0.01", "10.08 ± 0.02", "-17.73 ± 0.02", "-12.24 ± 0.45", "154.93 ± 0.28"),
    "MAF MoG (5)": ("0.30 ± 0.01", "9.59 ± 0.02", "-17.39 ± 0.02", "-11.68 ± 0.44", "156.36 ± 0.28"),
}
PUBLISHED: Dict[str, Dict[str, str]] = {
    name: {label: row[i] for label, row in _T1.items()}
    for i, name in enumerate(("power", "gas", "hepmass", "miniboone", "bsds300"))
}
# HEPMASS: thesis table 7.5 (1x512 MADE/MAF/Real NVP; HAF 1x256 and 1x350).
PUBLISHED["hepmass"].update({"HAF (5) 50%": "-19.18 ± 0.04 (thesis)", "HAF (5) 70%": "-19.64 ± 0.05 (thesis)"})
# MNIST, logit space: MAF paper Table 2; HAF rows and thesis re-runs: thesis table 7.4 (1x1024, HAF 1x550 / 1x700).
PUBLISHED["mnist"] = {
    "Gaussian": "-1366.9 ± 1.4",
    "MADE": "-1380.8 ± 4.8 (thesis -1379.97)",
    "MADE MoG": "-1038.5 ± 1.8",
    "Real NVP (5)": "-1323.2 ± 6.6 (thesis -1310.13)",
    "Real NVP (10)": "-1370.7 ± 10.1",
    "MAF (5)": "-1300.5 ± 1.7 (thesis -1296.09)",
    "MAF (10)": "-1313.1 ± 2.0",
    "MAF MoG (5)": "-1100.3 ± 1.6",
    "HAF (5) 50%": "-1292.91 ± 2.57 (thesis)",
    "HAF (5) 70%": "-1297.64 ± 4.14 (thesis)",
}
# MNIST class-conditional, logit space (Table 2) and bits/pixel (Table 5). Table 5's conditional MAF
# rows (0.59, 0.61) disagree with Table 2, whose LLs convert to about 1.9 bits/pixel (eq. 17).
_T5_MNIST = {  # label: (Table 2 conditional LL, Table 5 unconditional bpp, Table 5 conditional bpp)
    "MADE": ("-1361.9 ± 1.9", "2.04 ± 0.01", "2.00 ± 0.01"),
    "MADE MoG": ("-1030.3 ± 1.7", "1.41 ± 0.01", "1.39 ± 0.01"),
    "Real NVP (5)": ("-1326.3 ± 5.8", "1.93 ± 0.01", "1.94 ± 0.01"),
    "Real NVP (10)": ("-1371.3 ± 43.9", "2.02 ± 0.02", "2.02 ± 0.08"),
    "MAF (5)": ("-1302.9 ± 1.7", "1.89 ± 0.01", "0.59 ± 0.01"),
    "MAF (10)": ("-1316.8 ± 1.8", "1.91 ± 0.01", "0.61 ± 0.01"),
    "MAF MoG (5)": ("-1092.3 ± 1.7", "1.52 ± 0.01", "1.51 ± 0.01"),
}
for _label, (_ll, _bpp, _bpp_cond) in _T5_MNIST.items():
    PUBLISHED["mnist"][_label] += f"; {_bpp} bits/pixel"
    PUBLISHED["mnist"][_label + " conditional"] = f"{_ll}; {_bpp_cond} bits/pixel"


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Prepared:
    """One dataset ready for training: raw splits and the raw -> model-space transform."""

    name: str
    splits: Dict[str, np.ndarray]  # raw x (integer levels for discrete data)
    discrete: bool
    num_levels: Optional[int]
    preprocessing: Preprocessing  # the transform component's map, constants fixed here
    true_log_prob: Optional[object] = None  # gmm only: x -> exact log p(x)
    entropy: Optional[float] = None
    entropy_2se: Optional[float] = None
    note: str = ""
    image_shape: Optional[List[int]] = None  # images: [H, W] or [H, W, C] (the ingest metadata's)
    contexts: Optional[Dict[str, np.ndarray]] = None  # --context label: one-hot classes [N, 10] per split

    @property
    def event_dim(self) -> int:
        return int(self.splits["train"].shape[1])

    @property
    def method(self) -> str:
        return self.preprocessing.method

    @property
    def lam(self) -> Optional[float]:
        return self.preprocessing.logit_lambda

    def to_model_space(self, x: np.ndarray, rng: Optional[np.random.Generator] = None):
        """(z float32, log|det dz/dx| float64) of raw rows; discrete rows are dequantised with `rng` first."""
        x = np.asarray(x, np.float64)
        if self.discrete:
            x = x + rng.uniform(size=x.shape)
        z, log_det = self.preprocessing.forward(x)
        return z.numpy().astype(np.float32), log_det.numpy()


def make_gmm(dim: int = 2, components: int = 8, seed: int = 0):
    """A random Gaussian mixture: (sample(n, rng), log_prob(x)) with exact log-density."""
    from scipy.special import logsumexp

    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(components, 5.0)) if components > 1 else np.ones(1)
    means = rng.normal(scale=3.0 if components > 1 else 1.0, size=(components, dim))
    chols = []
    for _ in range(components):
        a = rng.normal(scale=0.6, size=(dim, dim))
        chols.append(np.linalg.cholesky(a @ a.T + 0.1 * np.eye(dim)))
    chols = np.stack(chols)

    def sample(n, sample_rng):
        k = sample_rng.choice(components, size=n, p=weights)
        eps = sample_rng.normal(size=(n, dim))
        return means[k] + np.einsum("nij,nj->ni", chols[k], eps)

    def log_prob(x):
        x = np.asarray(x, np.float64)
        terms = []
        for k in range(components):
            diff = np.linalg.solve(chols[k], (x - means[k]).T).T  # L^-1 (x - mu)
            log_det = np.log(np.diag(chols[k])).sum()
            terms.append(np.log(weights[k]) - 0.5 * (diff**2).sum(1) - log_det - 0.5 * dim * math.log(2 * math.pi))
        return logsumexp(np.stack(terms, 1), axis=1)

    return sample, log_prob


def prepare_data(args) -> Prepared:
    """Loads (ingest component) or generates (gmm) the splits and fixes the transform."""
    from tfflows.components.transform import Preprocessing
    from tfflows.components.transform.conversions import mean_and_two_se
    from tfflows.components.transform.preprocessing import Moments

    if args.dataset == "gmm":
        sample, log_prob = make_gmm(args.gmm_dim, args.gmm_components, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        splits = {"train": sample(args.gmm_train, rng), "eval": sample(args.gmm_train // 5, rng),
                  "test": sample(args.gmm_test, rng)}
        h, h_se = mean_and_two_se(-log_prob(sample(args.entropy_samples, np.random.default_rng(args.seed + 2))))
        train = Moments.of(splits["train"])
        return Prepared("gmm", splits, False, None, Preprocessing.standardize(train.mean, train.std),
                        true_log_prob=log_prob, entropy=h, entropy_2se=h_se,
                        note=f"{args.gmm_dim}-D mixture of {args.gmm_components} Gaussians")
    from tfflows.components.config import IngestConfig
    from tfflows.components.ingest.loaders import load_in_memory
    from tfflows.components.transform.executor import benchmark_transform_config, default_logit_lambda

    options = dict(dataset=args.dataset, path=args.path, seed=args.seed)
    if args.dataset == "moons":
        options["num_samples"] = args.moons_samples
    if args.max_examples:
        options["max_examples"] = args.max_examples
    if args.eval_count is not None:
        options["eval_count"] = args.eval_count
    if args.test_count is not None:
        options["test_count"] = args.test_count
    data = load_in_memory(IngestConfig(**options))
    splits = {k: np.asarray(v, np.float64) for k, v in data.splits.items()}
    try:
        tconfig = benchmark_transform_config(args.dataset)
        method, analyze, lam = tconfig.method, tconfig.analyze_splits, tconfig.logit_lambda
    except ValueError:
        method, analyze, lam = ("logit" if data.discrete else "standardize"), ("train",), None
    d = splits["train"].shape[1]
    if method == "logit":
        lam = default_logit_lambda(args.dataset) if lam is None else lam
        preprocessing = Preprocessing.logit(d, data.num_levels, lam)
    elif method == "standardize":
        moments = Moments.of(np.concatenate([splits[s] for s in analyze]))
        preprocessing = Preprocessing.standardize(moments.mean, moments.std)
    else:
        preprocessing = Preprocessing.identity(d)
    contexts = None
    if args.context == "label":
        contexts = {name: np.eye(10, dtype=np.float32)[labels] for name, labels in class_labels(args, splits).items()}
    return Prepared(args.dataset, splits, bool(data.discrete), data.num_levels, preprocessing, note=data.source,
                    image_shape=data.image_shape, contexts=contexts)


def _labelled_images(args):
    """(images [N, D] float64, labels [N]) of every labelled image of the dataset's source."""
    if args.dataset == "digits":
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        return np.asarray(images, np.float64), labels
    from tfflows.components.ingest.loaders import default_mnist_dir, read_idx

    folder = args.path or str(default_mnist_dir())
    pairs = []
    for stem in ("train", "t10k"):
        names = [os.path.join(folder, f"{stem}-{kind}-idx{n}-ubyte") for kind, n in (("images", 3), ("labels", 1))]
        found = [next((f + ext for ext in (".gz", "") if os.path.isfile(f + ext)), None) for f in names]
        if all(found):
            images = read_idx(found[0])
            pairs.append((images.reshape(len(images), -1).astype(np.float64), read_idx(found[1])))
    if not pairs:
        raise SystemExit(f"--context label: no MNIST image and label IDX files in {folder}")
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def class_labels(args, splits: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The class of every ingested row, split by split (``--context label``: digits, mnist).

    The ingest component splits images without their labels, so each row is matched to its label
    by its pixels; an image that occurs twice with two labels is refused, as is a row not found.
    """
    images, labels = _labelled_images(args)
    index: Dict[bytes, int] = {}
    for image, label in zip(images, labels):
        key = image.tobytes()
        if index.setdefault(key, int(label)) != int(label):
            raise SystemExit(f"--context label: one {args.dataset} image has labels {index[key]} and {label}")
    out = {}
    for name, rows in splits.items():
        try:
            out[name] = np.array([index[row.tobytes()] for row in np.asarray(rows, np.float64)], np.int64)
        except KeyError:
            raise SystemExit(f"--context label: a {name} row of {args.dataset} has no labelled image") from None
    return out


# --------------------------------------------------------------------------- models


def gaussian_log_prob(train_z: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Log-density of `z` under the full-covariance maximum-likelihood Gaussian of `train_z`."""
    train_z, z = np.asarray(train_z, np.float64), np.asarray(z, np.float64)
    mean = train_z.mean(0)
    cov = np.cov(train_z, rowvar=False, bias=True).reshape(train_z.shape[1], -1)
    cov = cov + 1e-9 * np.trace(cov) / len(cov) * np.eye(len(cov))
    chol = np.linalg.cholesky(cov)
    diff = np.linalg.solve(chol, (z - mean).T).T
    return -0.5 * (diff**2).sum(1) - np.log(np.diag(chol)).sum() - 0.5 * z.shape[1] * math.log(2 * math.pi)


def _log_prob(model, z: np.ndarray, batch: int = 2000, context: Optional[np.ndarray] = None) -> np.ndarray:
    return np.concatenate([model.log_prob(z[i:i + batch], context=None if context is None else context[i:i + batch]).numpy()
                           for i in range(0, len(z), batch)]).astype(np.float64)


def flow_options(spec: dict, hidden: int, args) -> dict:
    """build_flow keywords of one MODELS entry at MAF width `hidden`."""
    width = max(1, int(round(spec.get("width", 1.0) * hidden)))
    options = dict(num_layers=spec.get("num_layers", 1), hidden_units=[width] * args.hidden_layers, l2=args.l2,
                   seed=args.seed)
    if "num_components" in spec:
        options["num_components"] = spec["num_components"]
    options.update(spec.get("options", {}))
    if args.no_batch_norm:
        options["batch_norm"] = False
    return options


def _with_context(z: np.ndarray, context: Optional[np.ndarray], batch: int = 5000):
    """Batches of z, or of (z, context) pairs, for `FlowModel.set_batch_norm_statistics`."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(z if context is None else (z, context)).batch(batch)


def train_model(spec: dict, data: Prepared, args, log=print) -> dict:
    """Trains one flow with early stopping under the epoch/time budget; returns the fitted model and stats."""
    import tensorflow as tf
    import tf_keras

    from tfflows.models import build_flow

    tf.keras.utils.set_random_seed(args.seed)
    from tfflows.models.kinds import data_options

    contexts = dict.fromkeys(("train", "eval", "test")) if not spec.get("conditional") else data.contexts
    if contexts is None:
        raise SystemExit(f"{spec['label']} is class-conditional: give --context label")
    context_dim = None if contexts["train"] is None else contexts["train"].shape[1]
    model = build_flow(spec["kind"], data.event_dim, **data_options(spec["kind"], data.image_shape),
                       context_dim=context_dim, **flow_options(spec, args.hidden, args))
    lr = args.lr if args.lr is not None else spec.get("lr", 1e-4) * (args.lr_scale or 1.0)
    model.compile(optimizer=tf_keras.optimizers.Adam(lr))
    rng = np.random.default_rng(args.seed + 10)
    eval_z, _ = data.to_model_space(data.splits["eval"], np.random.default_rng(args.seed + 20))
    fixed_train_z, _ = data.to_model_space(data.splits["train"], np.random.default_rng(args.seed + 30))
    model.initialise_from_data(fixed_train_z[:args.batch_size])  # Glow's ActNorm (plain Keras fit skips it)
    best, best_weights, best_epoch, waited, epoch, stopped = -np.inf, model.get_weights(), 0, 0, 0, "max_epochs"
    start = time.time()
    while epoch < args.max_epochs:
        epoch += 1
        train_z = data.to_model_space(data.splits["train"], rng)[0] if data.discrete else fixed_train_z
        # Keras fit without FlowModel.fit's statistics pass; the statistics are set just below. A
        # context rides as Keras' y: FlowModel takes a batch (x, context).
        tf_keras.Model.fit(model, train_z, contexts["train"], batch_size=args.batch_size, epochs=1, shuffle=True,
                           verbose=0)
        if model.batch_norm_layers:
            model.set_batch_norm_statistics(_with_context(train_z, contexts["train"]))
        val_ll = float(np.mean(_log_prob(model, eval_z, context=contexts["eval"])))
        if np.isfinite(val_ll) and val_ll > best:
            best, best_weights, best_epoch, waited = val_ll, model.get_weights(), epoch, 0
        else:
            waited += 1
        elapsed = time.time() - start
        if args.verbose:
            log(f"    epoch {epoch:4d}  val LL {val_ll:10.3f}  best {best:10.3f} (epoch {best_epoch})  {elapsed:6.0f} s")
        if waited >= args.patience:
            stopped = "early_stopping"
            break
        if args.max_minutes and elapsed > 60 * args.max_minutes:
            stopped = "time_budget"
            break
    model.set_weights(best_weights)
    if model.batch_norm_layers:
        model.set_batch_norm_statistics(_with_context(fixed_train_z, contexts["train"]))
    params = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    return dict(model=model, seconds=time.time() - start, epochs=epoch, best_epoch=best_epoch, stopped=stopped,
                params=params, learning_rate=lr, val_ll=best,
                hidden_units=flow_options(spec, args.hidden, args)["hidden_units"])


# --------------------------------------------------------------------------- scoring and table


def score(model_ll: np.ndarray, z: np.ndarray, log_det: np.ndarray, data: Prepared) -> dict:
    """Test metrics of per-example model-space log-likelihoods."""
    from tfflows.components.transform.conversions import bits_per_dim, bits_per_dim_from_logit, mean_and_two_se

    out = {}
    out["test_ll"], out["test_ll_2se"] = mean_and_two_se(model_ll)
    if data.discrete:
        bpd = (bits_per_dim_from_logit(model_ll, z, data.num_levels, data.lam) if data.method == "logit"
               else bits_per_dim(model_ll + log_det, z.shape[1]))
        out["bits_per_dim"], out["bits_per_dim_2se"] = mean_and_two_se(bpd)
    if data.entropy is not None:
        out["test_nll_data"], se = mean_and_two_se(-(model_ll + log_det))
        out["kl_gap"] = out["test_nll_data"] - data.entropy
        out["kl_gap_2se"] = float(math.hypot(se, data.entropy_2se))
    return out


def paired_differences(pairs: Sequence[str], log_likelihoods: Dict[str, np.ndarray], labels: Dict[str, str]) -> List[dict]:
    """Mean per-example test log-likelihood difference of each pair "A:B" (A - B) ± 2 s.e."""
    from tfflows.components.transform.conversions import paired_difference

    out = []
    for pair in pairs:
        a, b = pair.split(":")
        diff, diff_2se = paired_difference(log_likelihoods[a], log_likelihoods[b])
        out.append(dict(pair=pair, a=labels[a], b=labels[b], difference=diff, difference_2se=diff_2se))
    return out


def format_pairs(differences: List[dict]) -> str:
    lines = ["| A | B | test LL A - B (nats, paired ± 2 s.e.) |", "|---|---|---|"]
    lines += [f"| {d['a']} | {d['b']} | {d['difference']:+.3f} ± {d['difference_2se']:.3f} |" for d in differences]
    return "\n".join(lines)


def _fmt(value, se=None, digits=2):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "nan" if value is not None else ""
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def format_table(result: dict) -> str:
    rows = result["rows"]
    discrete = any("bits_per_dim" in r for r in rows)
    gap = result.get("entropy") is not None
    head = ["model", "L×H", "test LL (nats)"]
    head += ["bits/dim"] if discrete else []
    head += ["KL gap (nats)"] if gap else []
    head += ["params", "train s", "epochs (best)", "stop", "published"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r.get("architecture", ""), _fmt(r["test_ll"], r["test_ll_2se"])]
        if discrete:
            cells.append(_fmt(r.get("bits_per_dim"), r.get("bits_per_dim_2se"), 3))
        if gap:
            cells.append(_fmt(r.get("kl_gap"), r.get("kl_gap_2se"), 3))
        cells += [str(r.get("params", "")), _fmt(r.get("train_seconds"), digits=0),
                  f"{r['epochs']} ({r['best_epoch']})" if r.get("epochs") else "", r.get("stopped", ""),
                  r.get("published") or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0],
                                     epilog="Models: " + ", ".join(f"{k} ({v['label']})" for k, v in MODELS.items()))
    parser.add_argument("--dataset", required=True, help="an ingest dataset name (moons, digits, mnist, power, gas, "
                        "hepmass, miniboone, bsds300, npy, ...) or 'gmm' (synthetic, exact entropy)")
    parser.add_argument("--path", help="data file or folder (IngestConfig.path)")
    parser.add_argument("--models", nargs="+", default=ALL_MODELS, choices=list(MODELS),
                        help="default: every unconditional model; the *_cond keys need --context label")
    parser.add_argument("--context", choices=["label"], default=None,
                        help="label: each image's class, one-hot, as the context of the *_cond models (digits, mnist)")
    parser.add_argument("--max-epochs", type=int, default=1000, help="maximum epochs per model (default 1000)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="training time budget per model, checked after each epoch (default: none)")
    parser.add_argument("--hidden", type=int, default=512, help="MAF/MADE/Real NVP width H (HAF: 0.5H, 0.7H)")
    parser.add_argument("--hidden-layers", type=int, default=1, help="hidden layers per network (papers: 1 or 2)")
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--l2", type=float, default=1e-6)
    parser.add_argument("--lr", type=float, default=None, help="override every model's learning rate")
    parser.add_argument("--lr-scale", type=float, default=None, help="multiply the recipe's learning rates")
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-examples", type=int, default=None, help="keep the first N source rows")
    parser.add_argument("--eval-count", type=int, default=None)
    parser.add_argument("--test-count", type=int, default=None)
    parser.add_argument("--moons-samples", type=int, default=4000)
    parser.add_argument("--gmm-dim", type=int, default=2)
    parser.add_argument("--gmm-components", type=int, default=8)
    parser.add_argument("--gmm-train", type=int, default=10000)
    parser.add_argument("--gmm-test", type=int, default=10000)
    parser.add_argument("--entropy-samples", type=int, default=500000)
    parser.add_argument("--pairs", nargs="+", default=[], metavar="A:B",
                        help="model keys compared on the same test points: mean log-likelihood of A minus B, "
                             "± 2 s.e. of the per-example differences (e.g. spline_maf5:maf5)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args(argv)
    for pair in args.pairs:
        keys = pair.split(":")
        if len(keys) != 2 or not set(keys) <= set(args.models):
            parser.error(f"--pairs {pair}: give A:B with both keys among --models ({' '.join(args.models)})")
    if args.context and args.dataset not in ("digits", "mnist"):
        parser.error(f"--context label needs a labelled image dataset (digits, mnist), not {args.dataset!r}")
    conditional = [key for key in args.models if MODELS[key].get("conditional")]
    if conditional and args.context is None:
        parser.error(f"--models {' '.join(conditional)}: class-conditional models need --context label")
    return args


def main(argv: Optional[Sequence[str]] = None, log=print) -> dict:
    """Runs the benchmark; prints and returns the results (dict, as written to --out)."""
    args = parse_args(argv)
    data = prepare_data(args)
    if data.event_dim < 2:
        args.models = [m for m in args.models if MODELS[m].get("kind") not in ("realnvp", "haf")]
    if data.image_shape is None:  # the image flows need an image shape
        args.models = [m for m in args.models if MODELS[m].get("kind") not in ("glow", "realnvp_image")]
    sizes = {k: len(v) for k, v in data.splits.items()}
    log(f"dataset {data.name}: D = {data.event_dim}, splits {sizes}, transform {data.method}"
        + (f" (lambda {data.lam})" if data.lam is not None else "") + (f"; {data.note}" if data.note else "")
        + ("; context: the class label, one-hot (10)" if data.contexts is not None else ""))
    if data.entropy is not None:
        log(f"entropy H = {data.entropy:.4f} ± {data.entropy_2se:.4f} nats ({args.entropy_samples} Monte Carlo samples)")
    test_z, test_log_det = data.to_model_space(data.splits["test"], np.random.default_rng(args.seed + 40))
    published = PUBLISHED.get(data.name, {})
    rows: List[dict] = []
    test_lls: Dict[str, np.ndarray] = {}  # per-example, for --pairs
    if data.true_log_prob is not None:
        true_ll = data.true_log_prob(data.splits["test"]) - test_log_det  # model space, like the others
        rows.append(dict(model="true density", key="true", architecture="", params=0,
                         **score(true_ll, test_z, test_log_det, data)))
    for key in args.models:
        spec = MODELS[key]
        log(f"  training {spec['label']} ...")
        if key == "gaussian":
            start = time.time()
            train_z, _ = data.to_model_space(data.splits["train"], np.random.default_rng(args.seed + 30))
            ll = gaussian_log_prob(train_z, test_z)
            d = data.event_dim
            row = dict(model=spec["label"], key=key, architecture="MLE", params=d + d * (d + 1) // 2,
                       train_seconds=time.time() - start, epochs=0, best_epoch=0, stopped="closed form")
        else:
            fit = train_model(spec, data, args, log=log)
            ll = _log_prob(fit.pop("model"), test_z, context=data.contexts["test"] if spec.get("conditional") else None)
            layers = spec.get("num_layers", 1)
            row = dict(model=spec["label"], key=key,
                       architecture=spec.get("architecture") or f"{layers}×" + "-".join(str(h) for h in fit["hidden_units"]),
                       params=fit["params"], train_seconds=fit["seconds"], epochs=fit["epochs"],
                       best_epoch=fit["best_epoch"], stopped=fit["stopped"], learning_rate=fit["learning_rate"],
                       val_ll=fit["val_ll"])
        test_lls[key] = ll
        row.update(score(ll, test_z, test_log_det, data))
        row["published"] = published.get(spec["label"])
        rows.append(row)
        log(f"    {row['model']}: test LL {_fmt(row['test_ll'], row['test_ll_2se'])}"
            + (f", KL gap {_fmt(row['kl_gap'], row['kl_gap_2se'], 3)}" if "kl_gap" in row else "")
            + (f", {_fmt(row['bits_per_dim'], row['bits_per_dim_2se'], 3)} bits/dim" if "bits_per_dim" in row else "")
            + (f", {row['train_seconds']:.0f} s, {row['epochs']} epochs" if row.get("epochs") else ""))
    result = dict(dataset=data.name, event_dim=data.event_dim, split_sizes=sizes, transform=data.method,
                  logit_lambda=data.lam, discrete=data.discrete, num_levels=data.num_levels,
                  entropy=data.entropy, entropy_2se=data.entropy_2se, source=data.note,
                  options={k: v for k, v in vars(args).items()}, rows=rows)
    table = format_table(result)
    pairs = [p for p in args.pairs if set(p.split(":")) <= set(test_lls)]  # both trained (an image flow may be dropped)
    if pairs:
        result["pairs"] = paired_differences(pairs, test_lls, {k: MODELS[k]["label"] for k in test_lls})
        table += "\n\nPaired differences on the same test points:\n\n" + format_pairs(result["pairs"])
    log("\n" + table)
    result["table"] = table
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, default=float)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
