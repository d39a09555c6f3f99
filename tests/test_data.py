"""Prompt datasets (mmalign.data) and BLEUBERI data selection (mmalign.text.selection)."""

import json
from types import SimpleNamespace

import pytest

from mmalign.data import DataError, load_jsonl, shipped_dataset, train_eval_split, write_jsonl
from mmalign.text.rewards import BleuReward
from mmalign.text.selection import score_rows, select_rows


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- load_jsonl -------------------------------------------------------------------------------------------------


def test_load_jsonl_reads_rows_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"prompt": "a", "references": ["x"]}', "", '{"prompt": "b"}'])
    assert load_jsonl(path) == [{"prompt": "a", "references": ["x"]}, {"prompt": "b"}]


def test_load_jsonl_names_file_line_and_missing_key(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"prompt": "a", "references": ["x"]}', "", '{"prompt": "b"}'])
    with pytest.raises(ValueError, match=r"d\.jsonl:3: row is missing \['references'\] \(it has \['prompt'\]\)"):
        load_jsonl(path, required=("prompt", "references"))


def test_load_jsonl_treats_empty_reference_list_as_missing(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"prompt": "a", "references": []}'])
    with pytest.raises(ValueError, match=r":1: row is missing \['references'\]"):
        load_jsonl(path, required=("prompt", "references"))


def test_load_jsonl_bad_json_and_non_objects(tmp_path):
    with pytest.raises(ValueError, match=r"d\.jsonl:2: not valid JSON"):
        load_jsonl(write_lines(tmp_path / "d.jsonl", ['{"prompt": "a"}', '{"prompt": "b",}']))
    with pytest.raises(ValueError, match=r"e\.jsonl:1: expected a JSON object per line, got a list"):
        load_jsonl(write_lines(tmp_path / "e.jsonl", ['["prompt"]']))
    with pytest.raises(ValueError, match="no rows"):
        load_jsonl(write_lines(tmp_path / "f.jsonl", [""]))


def test_load_jsonl_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl' not found\. Pass the path of a \.jsonl file.*instruc"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_write_jsonl_round_trip(tmp_path):
    rows = [{"prompt": "Traduis : bonjour", "references": ["à bientôt"]}, {"prompt": "b"}]
    path = write_jsonl(rows, tmp_path / "sub" / "out.jsonl")
    assert "à bientôt" in path.read_text(encoding="utf-8")
    assert load_jsonl(path) == rows


# --- train_eval_split -------------------------------------------------------------------------------------------


def test_train_eval_split_is_deterministic_disjoint_and_ordered():
    rows = list(range(50))
    train, held = train_eval_split(rows, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40
    assert sorted(train + held) == rows
    assert train == sorted(train) and held == sorted(held)  # original order kept
    assert train_eval_split(rows, 0.2, seed=3) == (train, held)
    assert train_eval_split(rows, 0.2, seed=4)[1] != held


def test_train_eval_split_edge_cases():
    assert train_eval_split([1, 2, 3], 0.0) == ([1, 2, 3], [])
    assert len(train_eval_split([1, 2, 3], 0.01)[1]) == 1  # at least one row when the fraction is > 0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        train_eval_split([1, 2, 3], 1.0)
    with pytest.raises(ValueError, match="no training rows"):
        train_eval_split([1], 0.5)


# --- the shipped dataset ----------------------------------------------------------------------------------------


def test_shipped_instructions_dataset():
    rows = load_jsonl(shipped_dataset("instructions"), required=("prompt", "references"))
    assert len(rows) >= 240
    assert len({r["prompt"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"prompt", "references"}
        assert 1 <= len(row["references"]) <= 2 and all(isinstance(r, str) and r.strip() for r in row["references"])
    assert sum(len(r["references"]) == 2 for r in rows) > len(rows) // 2
    by_prompt = {r["prompt"]: r["references"] for r in rows}
    assert by_prompt["Give the plural of 'mouse'."] == ["mice", "The plural of mouse is mice."]
    assert "The capital of Italy is Rome." in by_prompt["What is the capital of Italy? Answer in one sentence."]


def test_shipped_dataset_unknown_name():
    with pytest.raises(FileNotFoundError, match=r"no dataset named 'nope'; shipped: \[.*'instructions'"):
        shipped_dataset("nope")


def test_shipped_dataset_loads_with_hf_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = shipped_dataset("instructions")
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == len(load_jsonl(path))
    assert ds.column_names == ["prompt", "references"]


# --- selection --------------------------------------------------------------------------------------------------

ROWS = ["a", "b", "c", "d", "e", "f"]
SCORES = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]  # ascending: b .1, f .2, d .3, a .5, e .7, c .9


@pytest.mark.parametrize(
    "mode, expected",
    [("hard", ["b", "f"]), ("easy", ["c", "e"]), ("medium", ["d", "a"])],
)
def test_select_rows_modes(mode, expected):
    assert select_rows(ROWS, SCORES, 2, mode) == expected


def test_select_rows_medium_odd_split_and_ties():
    assert select_rows(ROWS, SCORES, 3, "medium") == ["f", "d", "a"]  # start (6 - 3) // 2 = 1
    assert select_rows(["x", "y", "z"], [0.0, 0.0, 1.0], 1, "hard") == ["x"]  # stable


def test_select_rows_random_is_seeded_and_in_row_order():
    picked = select_rows(ROWS, SCORES, 3, "random", seed=1)
    assert picked == select_rows(ROWS, SCORES, 3, "random", seed=1)
    assert len(set(picked)) == 3 and picked == sorted(picked)
    draws = {tuple(select_rows(ROWS, SCORES, 3, "random", seed=s)) for s in range(10)}
    assert len(draws) > 1


def test_select_rows_errors():
    with pytest.raises(ValueError, match="unknown selection mode 'hardest'"):
        select_rows(ROWS, SCORES, 2, "hardest")
    with pytest.raises(ValueError, match="5 scores for 6 rows"):
        select_rows(ROWS, SCORES[:5], 2)
    with pytest.raises(ValueError, match=r"between 0 and the number of rows \(6\), got 7"):
        select_rows(ROWS, SCORES, 7)
    with pytest.raises(ValueError, match=r"rows \[2\] are not finite"):
        select_rows(ROWS, [0.1, 0.2, float("nan"), 0.3, 0.4, 0.5], 2)


class FakePolicy:
    """sample(contexts, n) -> outputs "<prompt>:<j>", context-major, like Policy.sample."""

    def __init__(self):
        self.calls = []

    def sample(self, contexts, num_samples):
        self.calls.append(len(contexts))
        return SimpleNamespace(outputs=[f"{c['prompt']}:{j}" for c in contexts for j in range(num_samples)])


def sample_index_reward(contexts, outputs, **kwargs):
    """Reward = row weight x sample index; checks that contexts line up with outputs."""
    assert all(o.startswith(c["prompt"] + ":") for c, o in zip(contexts, outputs, strict=True))
    return [c["w"] * int(o.rsplit(":", 1)[1]) for c, o in zip(contexts, outputs, strict=True)]


def test_score_rows_averages_samples_per_row_in_batches():
    rows = [{"prompt": "p0", "w": 1.0}, {"prompt": "p1", "w": 2.0}, {"prompt": "p2", "w": 10.0}]
    policy = FakePolicy()
    scores = score_rows(policy.sample, rows, sample_index_reward, num_samples=3, batch_size=2)
    assert scores == pytest.approx([1.0, 2.0, 10.0])  # mean of w * (0, 1, 2)
    assert policy.calls == [2, 1]


def test_score_rows_then_select_hard_with_bleu():
    rows = [
        {"prompt": "p0", "references": ["the cat sat on the mat"], "answer": "the cat sat on the mat"},
        {"prompt": "p1", "references": ["the dog ran"], "answer": "zzz"},
        {"prompt": "p2", "references": ["a red mat"], "answer": "a red"},
    ]

    def sample(contexts, num_samples):
        return SimpleNamespace(outputs=[c["answer"] for c in contexts for _ in range(num_samples)])

    scores = score_rows(sample, rows, BleuReward(), num_samples=2)
    assert scores[0] == 1.0 and scores[1] < scores[2] < 1.0
    assert [r["prompt"] for r in select_rows(rows, scores, 2, "hard")] == ["p1", "p2"]


def test_score_rows_rejects_wrong_output_count():
    def sample(contexts, num_samples):
        return SimpleNamespace(outputs=["x"] * len(contexts))

    with pytest.raises(ValueError, match="returned 2 outputs for 2 contexts x 2 samples; expected 4"):
        score_rows(sample, [{"prompt": "a"}, {"prompt": "b"}], sample_index_reward, num_samples=2)


def test_score_rows_names_a_bad_reward():
    def nan_reward(contexts, outputs, **kwargs):
        return [float("nan")] * len(outputs)

    with pytest.raises(ValueError, match="'nan_reward' returned non-finite"):
        score_rows(FakePolicy().sample, [{"prompt": "a"}], nan_reward)


def test_write_jsonl_of_selected_rows(tmp_path):
    rows = [{"prompt": str(i), "references": ["r"]} for i in range(4)]
    kept = select_rows(rows, [3.0, 1.0, 2.0, 0.0], 2, "hard")
    path = write_jsonl(kept, tmp_path / "hard.jsonl")
    assert [json.loads(line)["prompt"] for line in path.read_text().splitlines()] == ["3", "1"]


# --- bytes and field types --------------------------------------------------------------------------------------


def test_load_jsonl_names_the_line_of_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"prompt": "a"}\n{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 16\); save the file"):
        load_jsonl(path)


def test_load_jsonl_checks_that_text_fields_hold_text(tmp_path):
    with pytest.raises(DataError, match=r"d\.jsonl:2: 'prompt' must be a string, got 5 \(int\)"):
        load_jsonl(write_lines(tmp_path / "d.jsonl", ['{"prompt": "a"}', '{"prompt": 5}']))
    with pytest.raises(DataError, match=r"'references' must be a string or a list of strings, got \[1\]"):
        load_jsonl(write_lines(tmp_path / "e.jsonl", ['{"prompt": "a", "references": [1]}']))
    one = write_lines(tmp_path / "f.jsonl", ['{"prompt": "a", "references": "b"}'])
    assert load_jsonl(one, required=("prompt", "references")) == [{"prompt": "a", "references": "b"}]
    assert load_jsonl(write_lines(tmp_path / "g.jsonl", ['{"prompt": 5}']), text_fields={}) == [{"prompt": 5}]
