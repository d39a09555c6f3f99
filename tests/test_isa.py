"""ISA's information-based selection (mmalign/text/isa.py): the mixture entropy and the leave-one-out entropy changes
against their closed forms for one Gaussian, which rows they rank first, and `selection: {mode: isa}` in the text
task and `mmalign select`."""

import json

import numpy as np
import pytest
from test_limr import ROWS, task_config

from mmalign.text.isa import embed_rows, entropy_changes, mixture_entropy
from mmalign.text.selection import SelectionSettings, select_rows
from mmalign.text.task import TextTask

pytest.importorskip("sklearn")


def gaussian_entropy(x: np.ndarray) -> float:
    """Mean surprisal of x under its maximum-likelihood Gaussian: (d log(2 pi) + log det S + d) / 2, as the mean
    Mahalanobis term under the MLE covariance S is exactly d."""
    d = x.shape[1]
    cov = np.cov(x, rowvar=False, bias=True)
    return 0.5 * (d * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + d)


def points(n: int = 40, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) @ np.diag([1.0, 0.5, 2.0])[:d, :d]


def test_one_gaussian_entropy_is_the_closed_form():
    x = points()
    assert mixture_entropy(x, components=1)[0] == pytest.approx(gaussian_entropy(x), rel=1e-5)


def test_entropy_change_is_leave_one_out_by_hand():
    """With one Gaussian and no reduction (dims = d), dH_j = H(x) - H(x without row j), each refitted."""
    x = points()
    want = [gaussian_entropy(x) - gaussian_entropy(np.delete(x, j, axis=0)) for j in range(len(x))]
    got = entropy_changes(x, components=1, dims=3)
    # PCA is a rotation here (all 3 dims kept): entropies are invariant to it
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_outliers_add_information_and_duplicates_do_not():
    """Two clusters; a far point ranks first, a point duplicated many times at a cluster centre ranks last."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(8, 1, (30, 2)), [[4.0, 20.0]], np.zeros((6, 2))])
    changes = entropy_changes(x, components=2, dims=2)
    assert int(np.argmax(changes)) == 60
    assert changes[61:].max() < np.median(changes)
    kept = select_rows(list(range(len(x))), changes.tolist(), 5, mode="isa")
    assert kept[0] == 60 and not set(kept) & set(range(61, 67))


def test_too_few_rows_are_refused():
    with pytest.raises(ValueError, match="too few"):
        entropy_changes(points(n=10), components=2, dims=8)


def test_task_keeps_the_rows_of_largest_entropy_change(tmp_path):
    rows = TextTask(task_config(tmp_path)).train_contexts  # the same split
    task = TextTask(task_config(tmp_path, selection=SelectionSettings(k=4, mode="isa", dims=2)))
    changes = entropy_changes(embed_rows(task.policy.model, task.policy.tokenizer, rows), 2, 2)
    order = np.argsort(-changes, kind="stable")[:4]
    assert [r["prompt"] for r in task.train_contexts] == [rows[i]["prompt"] for i in order]
    assert task.selection_stats["entropy_change_kept"] > task.selection_stats["entropy_change_all"]


def test_mmalign_select_isa(tmp_path):
    from test_cli import CFG

    from mmalign.cli import main
    from mmalign.data import write_jsonl

    data = write_jsonl(ROWS, tmp_path / "rows.jsonl")
    assert main(["select", CFG, f"task_args.dataset={data}", "task_args.eval_fraction=0.2", "--k", "3", "--mode",
                 "isa", "--out", str(tmp_path / "isa.jsonl")]) == 0
    kept = [json.loads(line)["prompt"] for line in (tmp_path / "isa.jsonl").read_text().splitlines()]
    assert len(set(kept)) == 3
