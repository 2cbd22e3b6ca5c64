"""Categorical MADE, mixed densities, the conditional banana, and the conditional benchmarks (issue 26)."""

import itertools
import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from scipy import stats

from tfflows.models import build_flow
from tfflows.models.categorical import CategoricalMADE, rule_of_succession
from tfflows.models.conditional_targets import ConditionalBanana
from tfflows.models.mixed import MixedDensity

K = [2, 3, 4]
ALL_ROWS = np.array(list(itertools.product(*[range(k) for k in K])), np.int32)  # all 24 combinations


def _randomise(layer, seed=0, scale=1.0):
    """Random weights everywhere (not the near-uniform initialisation), masks untouched."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(rng.normal(scale=scale, size=v.shape).astype(v.dtype.as_numpy_dtype))


def _made(order="random", hidden=(8, 8), context_dim=2, seed=0):
    made = CategoricalMADE(K, hidden, order=order, context_dim=context_dim, seed=3, dtype="float64")
    _randomise(made, seed)
    return made


# --------------------------------------------------------------------------- CategoricalMADE


@pytest.mark.parametrize("order,hidden,context_dim", [("natural", (8,), None), ("random", (8, 8), 2),
                                                      ("reversed", (), 2)])
def test_probabilities_sum_to_one_over_every_row(order, hidden, context_dim):
    made = _made(order, hidden, context_dim)
    for context in ([0.0, 0.0], [1.5, -2.0]) if context_dim else (None,):
        c = None if context is None else np.tile(context, (len(ALL_ROWS), 1))
        p = np.exp(made.log_prob(ALL_ROWS, c).numpy())
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert p.max() > 3 * p.min()  # the random weights give a far from uniform table


def test_log_prob_is_the_chain_rule_of_the_softmaxes():
    made = _made()
    c = np.random.default_rng(1).normal(size=(len(ALL_ROWS), 2))
    table = made.conditional_log_probs(ALL_ROWS, c).numpy()  # [24, 3, 4]
    expected = sum(table[np.arange(len(ALL_ROWS)), i, ALL_ROWS[:, i]] for i in range(3))
    np.testing.assert_allclose(made.log_prob(ALL_ROWS, c).numpy(), expected, rtol=0, atol=1e-12)
    assert np.all(np.isneginf(table[:, 0, 2:])) and np.all(np.isneginf(table[:, 1, 3:]))  # K_1 = 2, K_2 = 3


@pytest.mark.parametrize("order", ["natural", "random", "reversed"])
def test_column_j_changes_only_the_logits_of_later_columns(order):
    made = _made(order)
    degrees = made.degrees_in
    c = np.random.default_rng(2).normal(size=(len(ALL_ROWS), 2))
    base = made.conditional_log_probs(ALL_ROWS, c).numpy()
    for j in range(3):
        changed = ALL_ROWS.copy()
        changed[:, j] = (changed[:, j] + 1) % K[j]
        after = made.conditional_log_probs(changed, c).numpy()
        for i in range(3):
            delta = np.abs(after[:, i, :K[i]] - base[:, i, :K[i]]).max()
            if degrees[i] <= degrees[j]:
                assert delta == 0.0, (order, j, i)
            else:
                assert delta > 1e-3, (order, j, i)  # and later columns do see column j
    # The context reaches every column, the first in the order too.
    moved = made.conditional_log_probs(ALL_ROWS, c + 1.0).numpy()
    assert all(np.abs(moved[:, i, :K[i]] - base[:, i, :K[i]]).max() > 1e-3 for i in range(3))


def test_structure_holds_after_training_steps():
    made = CategoricalMADE(K, [8], order="random", seed=1)
    optimizer = tf_keras.optimizers.Adam(0.1)
    codes = ALL_ROWS[np.random.default_rng(0).integers(0, 24, 64)]
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(made.log_prob(codes))
        optimizer.apply_gradients(zip(tape.gradient(loss, made.trainable_variables), made.trainable_variables))
    first = int(np.argmin(made.degrees_in))  # the first column in the order sees no other column
    table = made.conditional_log_probs(ALL_ROWS).numpy()[:, first, :K[first]]
    np.testing.assert_array_equal(table, np.broadcast_to(table[0], table.shape))
    assert np.exp(made.log_prob(ALL_ROWS).numpy()).sum() == pytest.approx(1.0, abs=1e-5)


def test_sampling_frequencies_match_the_exact_probabilities():
    made = _made()
    context = np.array([0.5, -1.0])
    p = np.exp(made.log_prob(ALL_ROWS, np.tile(context, (24, 1))).numpy())
    n = 20000
    codes = made.sample(n, seed=7, context=context).numpy()
    cell = np.ravel_multi_index(codes.T, K)  # ALL_ROWS is in ravel order
    counts = np.bincount(cell, minlength=24)
    # Pearson's test, cells expected fewer than 5 times pooled into one (the usual validity rule).
    rare = n * p < 5
    observed = np.append(counts[~rare], counts[rare].sum())
    expected = np.append(n * p[~rare], n * p[rare].sum())
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=len(observed) - 1), (chi2, observed, expected)
    np.testing.assert_array_equal(made.sample(50, seed=7, context=context), codes[:50])  # seeded
    assert not np.array_equal(made.sample(50, seed=8, context=context), codes[:50])


def test_codes_out_of_range_are_refused_with_the_column():
    made = CategoricalMADE(K, [4])
    with pytest.raises(ValueError, match="column 1 must be in 0..2, but holds 3"):
        made.log_prob(np.array([[0, 3, 0]]))
    with pytest.raises(ValueError, match=r"shape \[batch, 3\]"):
        made.log_prob(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="`num_categories`"):
        CategoricalMADE([2, 0], [4])


@pytest.mark.parametrize("order,hidden,context_dim", [("random", (8, 8), 2), ("reversed", (), None)])
def test_a_fixed_oov_probability_is_exact_and_the_rows_still_sum_to_one(order, hidden, context_dim):
    """Each column's last category (the out-of-vocabulary bucket) has probability epsilon exactly,
    whatever the weights and the other columns, and the 24 rows still sum to 1."""
    epsilon = rule_of_succession(2398)
    made = CategoricalMADE(K, hidden, order=order, context_dim=context_dim, seed=3, dtype="float64",
                           oov_probability=epsilon)
    _randomise(made, seed=5, scale=2.0)
    c = None if context_dim is None else np.random.default_rng(6).normal(size=(len(ALL_ROWS), 2))
    table = np.exp(made.conditional_log_probs(ALL_ROWS, c).numpy())  # [24, 3, 4]
    for i, k in enumerate(K):
        np.testing.assert_allclose(table[:, i, k - 1], epsilon, rtol=1e-14)
        np.testing.assert_allclose(table[:, i, :k].sum(axis=1), 1.0, rtol=1e-14)
    p = np.exp(made.log_prob(ALL_ROWS, c).numpy())
    if c is None:
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
    oov = (ALL_ROWS == np.array(K) - 1).all(axis=1)  # the row of three buckets: epsilon cubed
    np.testing.assert_allclose(p[oov], epsilon ** 3, rtol=1e-12)
    assert epsilon == 1 / 2400 and rule_of_succession(0) == 0.5  # Laplace: (0 + 1) / (n + 2)
    with pytest.raises(ValueError, match="`oov_probability`"):
        CategoricalMADE([1, 3], [4], oov_probability=0.1)  # a column of the bucket alone
    with pytest.raises(ValueError, match="`oov_probability`"):
        CategoricalMADE(K, [4], oov_probability=1.0)


def test_mixed_density_keeps_its_oov_probability_through_config_and_checkpoint(tmp_path):
    model = MixedDensity(1, [3, 2], kind="maf", num_layers=1, hidden_units=[8], categorical_hidden_units=[4],
                         oov_probability=0.001)
    _randomise(model.categorical, seed=1)
    x, codes = np.zeros([3, 1], np.float32), np.array([[2, 0], [0, 1], [1, 0]], np.int32)
    tf.train.Checkpoint(flow=model).write(str(tmp_path / "flow"))
    config = json.loads(json.dumps(model.get_config()))  # as `save_flow` writes it
    assert config["oov_probability"] == 0.001
    restored = MixedDensity.from_config(config)
    tf.train.Checkpoint(flow=restored).read(str(tmp_path / "flow")).assert_existing_objects_matched()
    for copy in (restored, model.frozen()):
        assert copy.categorical.oov_probability == 0.001
        np.testing.assert_allclose(copy.log_prob(x, codes).numpy(), model.log_prob(x, codes).numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.exp(restored.categorical_log_prob(codes).numpy()[0]) / 0.001,
                               np.exp(restored.categorical.conditional_log_probs(codes).numpy()[0, 1, 0]),
                               rtol=1e-5)  # row 0: the first column's bucket (epsilon) times P(second = 0 | it)


# --------------------------------------------------------------------------- MixedDensity


def test_mixed_log_prob_is_the_sum_of_its_parts_and_integrates_to_one():
    """D = 1 numeric column, categories [2, 3], a context: sum over the 6 rows of categories of
    the integral over x of exp(log p(s, x | y)) is 1, and log p splits into its two parts."""
    model = MixedDensity(1, [2, 3], kind="maf", context_dim=1, num_layers=2, hidden_units=[8],
                         categorical_hidden_units=[4], dtype="float64")
    _randomise(model.categorical, seed=3)
    _randomise(model.flow, seed=4, scale=0.3)
    rows = np.array(list(itertools.product(range(2), range(3))), np.int32)
    grid = np.linspace(-30, 30, 20001)
    y = np.array([[0.7]])
    total = 0.0
    for s in rows:
        codes = np.tile(s, (len(grid), 1))
        context = np.tile(y, (len(grid), 1))
        log_p = model.log_prob(grid[:, None], codes, context).numpy()
        # Independently: the categorical MADE alone, and the flow alone given a hand-made one-hot.
        one_hot = np.concatenate([np.eye(2)[codes[:, 0]], np.eye(3)[codes[:, 1]], context], axis=1)
        parts = model.categorical.log_prob(codes, context).numpy() + model.flow.log_prob(grid[:, None], one_hot).numpy()
        np.testing.assert_allclose(log_p, parts, rtol=0, atol=1e-9)
        total += np.trapezoid(np.exp(log_p), grid)
    assert total == pytest.approx(1.0, abs=1e-4)


def _mixture(n, rng):
    """s ~ Categorical(0.5, 0.3, 0.2); x | s ~ N(mu_s, 0.5^2 I_2) and its exact log p(s, x)."""
    weights, means = np.array([0.5, 0.3, 0.2]), np.array([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]])
    s = rng.choice(3, size=n, p=weights)
    x = means[s] + 0.5 * rng.normal(size=(n, 2))
    log_p = np.log(weights[s]) + stats.multivariate_normal(np.zeros(2), 0.25 * np.eye(2)).logpdf(x - means[s])
    return x.astype(np.float32), s[:, None].astype(np.int32), log_p


def test_mixed_density_learns_a_mixed_table_and_beats_ignoring_the_category():
    rng = np.random.default_rng(0)
    x, s, _ = _mixture(3000, rng)
    x_test, s_test, true_ll = _mixture(3000, rng)
    tf.keras.utils.set_random_seed(0)
    options = dict(kind="maf", num_layers=2, hidden_units=[16], batch_norm=False)
    mixed = MixedDensity(2, [3], categorical_hidden_units=[4], **options)
    mixed.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
    mixed.fit(tf.data.Dataset.from_tensor_slices((x, s)).shuffle(3000, seed=0).batch(100), epochs=25, verbose=0)
    # Baseline: the numeric columns alone (same flow), times the categories' train frequencies.
    numeric_only = build_flow(options.pop("kind"), 2, **options)
    numeric_only.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
    numeric_only.fit(tf.data.Dataset.from_tensor_slices(x).shuffle(3000, seed=0).batch(100), epochs=25, verbose=0)
    frequencies = np.bincount(s[:, 0], minlength=3) / len(s)
    baseline = np.log(frequencies[s_test[:, 0]]) + numeric_only.log_prob(x_test).numpy()
    ll = mixed.log_prob(x_test, s_test).numpy()
    gap, gap_2se = np.mean(true_ll - ll), 2 * np.std(true_ll - ll) / math.sqrt(len(ll))
    assert abs(gap) < 0.04 + gap_2se, (gap, gap_2se)  # matches the true log-likelihood (0.013 measured)
    # The true table beats the baseline by 1.28 nats here: I(s; x) plus the baseline's own error.
    gain = ll - baseline
    assert np.mean(gain) - 2 * np.std(gain) / math.sqrt(len(gain)) > 1.0, np.mean(gain)
    numeric, codes = mixed.sample(3000, seed=5)
    assert np.array_equal(mixed.sample(10, seed=5)[1], codes[:10])
    counts = np.bincount(codes.numpy()[:, 0], minlength=3)
    assert np.allclose(counts / 3000, [0.5, 0.3, 0.2], atol=0.04), counts
    for k, mean in enumerate([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5]]):
        assert np.allclose(numeric.numpy()[codes.numpy()[:, 0] == k].mean(0), mean, atol=0.15)


def test_mixed_fit_with_batch_norm_sets_its_train_statistics_and_needs_a_dataset():
    rng = np.random.default_rng(1)
    x, s, _ = _mixture(400, rng)
    context = rng.normal(size=(400, 1)).astype(np.float32)
    model = MixedDensity(2, [3], kind="realnvp", context_dim=1, num_layers=2, hidden_units=[8])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="finite tf.data.Dataset"):
        model.fit((x, s, context), epochs=1, verbose=0)
    model.fit(tf.data.Dataset.from_tensor_slices((x, s, context)).batch(100), epochs=1, verbose=0)
    fitted = [layer.mean.numpy().copy() for layer in model.flow.batch_norm_layers]
    # Running averages after 4 steps at momentum 0.95 would be near their start; train-set
    # statistics are a fixed point of setting them again from (x, [onehot(s), context]).
    model.flow.set_batch_norm_statistics(tf.data.Dataset.from_tensor_slices(
        (x, model.flow_context(s, context))).batch(400))
    for layer, mean in zip(model.flow.batch_norm_layers, fitted):
        np.testing.assert_allclose(layer.mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(model.log_prob(x, s, context).numpy()))


# --------------------------------------------------------------------------- ConditionalBanana


@pytest.mark.parametrize("c", [-1.0, 0.0, 0.8])
def test_banana_log_prob_integrates_to_one_with_the_closed_form_moments(c):
    target = ConditionalBanana()
    grid = np.linspace(-12, 12, 1201)
    x1, x2 = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([x1.ravel(), x2.ravel()], axis=1)
    p = np.exp(target.log_prob(points, np.full((len(points), 1), c)))
    cell = (grid[1] - grid[0]) ** 2
    assert p.sum() * cell == pytest.approx(1.0, abs=1e-4)
    mean, cov = target.mean_and_covariance(np.array([[c]]))
    np.testing.assert_allclose((points * p[:, None]).sum(0) * cell, mean[0], atol=1e-3)
    centred = points - mean[0]
    # The grid cuts off the banana's heavy tails: the second moments are 0.2 % short at c = 0.8.
    np.testing.assert_allclose(np.einsum("ni,nj,n->ij", centred, centred, p) * cell, cov[0], rtol=5e-3, atol=1e-3)


def test_banana_samples_follow_the_closed_form_moments_and_the_context():
    target = ConditionalBanana()
    rng = np.random.default_rng(0)
    for c in (-0.9, 0.6):
        context = np.full((100000, 1), c)
        x = target.sample(context, rng)
        mean, cov = target.mean_and_covariance(context[:1])
        se = np.sqrt(np.diag(cov[0]) / len(x))
        assert np.all(np.abs(x.mean(0) - mean[0]) < 4 * se)
        np.testing.assert_allclose(np.cov(x, rowvar=False), cov[0], rtol=0.05, atol=0.01)
    x, c = target.sample_joint(1000, rng)
    assert x.shape == (1000, 2) and c.shape == (1000, 1) and np.all(np.abs(c) < 1)
    # The context matters: the density of a fixed x differs under two contexts.
    log_p = target.log_prob(np.zeros((2, 2)), np.array([[-0.8], [0.8]]))
    assert abs(log_p[0] - log_p[1]) > 0.5


# --------------------------------------------------------------------------- benchmarks


@pytest.mark.slow  # the KL benchmark end to end: two flows trained (about 15 s)
def test_conditional_kl_benchmark_rows(capsys):
    from benchmarks import conditional

    result = conditional.main(["--models", "made", "maf5_marginal", "--max-epochs", "1", "--train", "300",
                               "--test", "300", "--hidden", "4"], log=lambda *_: None)
    assert [r["key"] for r in result["rows"]] == ["made", "maf5_marginal"]
    assert any(line.startswith("planar:") for line in result["refused"])
    for row in result["rows"]:
        # The gap is the paired mean of log p - log q: mean log q = -H - gap.
        assert row["kl_gap"] == pytest.approx(-result["entropy"] - row["test_ll"], abs=1e-9)
        assert row["kl_gap"] > -row["kl_gap_2se"] and row["kl_gap_2se"] > 0
    assert "| MADE | made |" in result["table"]


@pytest.mark.slow  # the quality script end to end on digits: two MADEs trained (about 15 s)
def test_quality_class_conditional_pairs_on_digits():
    from benchmarks import quality

    result = quality.main(["--dataset", "digits", "--context", "label", "--models", "made", "made_cond",
                           "--pairs", "made_cond:made", "--max-epochs", "1", "--hidden", "64",
                           "--patience", "5"], log=lambda *_: None)
    rows = {r["key"]: r for r in result["rows"]}
    assert rows["made_cond"]["model"] == "MADE conditional" and "bits_per_dim" in rows["made_cond"]
    (pair,) = result["pairs"]
    assert pair["difference"] == pytest.approx(rows["made_cond"]["test_ll"] - rows["made"]["test_ll"], abs=1e-9)
    with pytest.raises(SystemExit):
        quality.parse_args(["--dataset", "digits", "--models", "maf5_cond"])  # no --context
    with pytest.raises(SystemExit):
        quality.parse_args(["--dataset", "moons", "--context", "label", "--models", "maf5_cond"])


def test_class_labels_match_the_ingested_digits():
    from sklearn.datasets import load_digits

    from benchmarks import quality

    args = quality.parse_args(["--dataset", "digits", "--context", "label", "--models", "maf5_cond"])
    data = quality.prepare_data(args)
    images, labels = load_digits(return_X_y=True)
    for name, rows in data.splits.items():
        found = data.contexts[name].argmax(1)
        for row, label in zip(rows[:50], found[:50]):
            assert label in labels[(images == row).all(1)]
