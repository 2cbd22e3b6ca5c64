"""`tfflows evaluate --beam-args`: scoring as a Beam pipeline gives the in-process path's scores,
summary and errors, on DirectRunner and on the portable runner with out-of-process SDK workers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tfflows.components.errors import DataError
from tfflows.pipeline import beam_scoring
from tfflows.pipeline.serving import evaluate_saved_model
from tests.artifact_testing import export_tiny_flow
from tests.cli_testing import cli
from tests.test_runners import _workers_started, portable_services  # noqa: F401 - a fixture

D = 3
DIRECT = ["--runner=DirectRunner"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_tiny_flow(tmp_path_factory.mktemp("beam_scoring"), D)[1]


def _tables(folder):
    """53 rows as .npy, and as a .csv with a blank line inside (line numbers != row numbers)."""
    rows = np.random.default_rng(0).normal(size=(53, D)).astype(np.float32)
    np.save(folder / "rows.npy", rows)
    text = [",".join(f"{v:.9g}" for v in r) for r in rows]
    (folder / "rows.csv").write_text("\n".join(["x0,x1,x2", *text[:20], "", *text[20:]]) + "\n")
    bad = rows.copy()
    bad[40, 1] = np.inf
    np.save(folder / "bad.npy", bad)
    return rows


def _load_scores(path):
    return np.load(path) if str(path).endswith(".npy") else np.genfromtxt(path, delimiter=",", names=True)["log_prob"]


def _same_as_in_process(model, folder, beam_args):
    """Scores both ways for the .npy and the .csv; chunks of 7 rows in batches of 5 (every boundary case)."""
    for data, scores in (("rows.npy", "s.npy"), ("rows.csv", "s.csv")):
        local = evaluate_saved_model(model, str(folder / data), str(folder / f"local_{scores}"), batch_size=5,
                                     chunk_rows=7)
        beam = evaluate_saved_model(model, str(folder / data), str(folder / scores), batch_size=5, chunk_rows=7,
                                    beam_args=beam_args)
        assert beam == local.replace("local_", ""), (beam, local)  # the same summary, line for line
        np.testing.assert_allclose(_load_scores(folder / scores), _load_scores(folder / f"local_{scores}"),
                                   rtol=0, atol=1e-6)
        assert len(_load_scores(folder / scores)) == 53


def test_beam_scores_equal_the_in_process_path(model, tmp_path):
    _tables(tmp_path)
    _same_as_in_process(model, tmp_path, DIRECT)
    assert sorted(os.listdir(tmp_path)) == ["bad.npy", "local_s.csv", "local_s.npy", "rows.csv", "rows.npy",
                                            "s.csv", "s.npy"]  # no shard folder or temporary file left


def test_beam_bad_row_is_the_same_one_line_error(model, tmp_path):
    _tables(tmp_path)
    (tmp_path / "bad.csv").write_text("x0,x1,x2\n1,2,3\n\n4,x,6\n")
    for data, message in (("bad.npy", "row 40, column 1 (x1): value inf is not finite"),
                          ("bad.csv", "line 4 row '4,x,6', column 1 (x1): value 'x' is not a number")):
        with pytest.raises(DataError) as local:
            evaluate_saved_model(model, str(tmp_path / data), str(tmp_path / "s.npy"), chunk_rows=7)
        with pytest.raises(DataError) as beam:
            evaluate_saved_model(model, str(tmp_path / data), str(tmp_path / "s.npy"), chunk_rows=7,
                                 beam_args=DIRECT)
        assert str(beam.value) == str(local.value) and message in str(beam.value)
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "bad.npy", "rows.csv", "rows.npy"]


def test_a_lost_chunk_fails_the_run(model, tmp_path, monkeypatch):
    _tables(tmp_path)
    write = beam_scoring._write_scores

    def loses_chunk_2(element, folder):
        if element[0] != 2:
            write(element, folder)

    monkeypatch.setattr(beam_scoring, "_write_scores", loses_chunk_2)
    with pytest.raises(DataError) as err:
        evaluate_saved_model(model, str(tmp_path / "rows.npy"), str(tmp_path / "s.npy"), chunk_rows=7,
                             beam_args=DIRECT)
    assert str(err.value) == (f"{tmp_path / 'rows.npy'}: chunk 2 (rows 14-20): no scores although Beam's "
                              "DirectRunner reported success (the runner lost output); fix: score on another "
                              "runner (README 'Scale-out')")
    assert not (tmp_path / "s.npy").exists()


def test_cli_beam_args_bad_row_exit_2_one_line(model, tmp_path):
    _tables(tmp_path)
    proc = cli("evaluate", "--model", model, "--data", str(tmp_path / "bad.npy"), "--scores", str(tmp_path / "s.npy"),
               "--beam-args=--runner=DirectRunner --direct_num_workers=1", timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"tfflows evaluate: {tmp_path / 'bad.npy'}: row 40, column 1 (x1): value inf is not "
                           "finite; fix: remove or impute NaN/inf values"), line
    assert not (tmp_path / "s.npy").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_beam_scoring_on_portable_runner_with_worker_processes(portable_services, model, tmp_path,  # noqa: F811
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing in the driver's working directory for workers to find
    pool_log, args = portable_services
    data = tmp_path / "data"
    data.mkdir()
    _tables(data)
    _same_as_in_process(model, data, args)
    assert _workers_started(pool_log) >= 1  # scored in SDK worker processes, not in this one
    with pytest.raises(DataError, match=r"bad.npy: row 40, column 1 \(x1\): value inf is not finite; fix: "):
        evaluate_saved_model(model, str(data / "bad.npy"), str(data / "bad_scores.npy"), chunk_rows=7,
                             beam_args=args)
    assert not (data / "bad_scores.npy").exists()
    assert not [n for n in os.listdir(data) if n.startswith(".")]
