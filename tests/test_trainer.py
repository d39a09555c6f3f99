"""The loop end to end through the CLI: outputs, resume after SIGKILL, bad input, non-finite steps, changed
settings on resume, and 2 processes = 1 process."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from files import strict_rows, tree_digest
from procs import run_ok
from safetensors.torch import load_file
from tiny import tiny_policy

from mmalign.checkpoint import trainable_state
from mmalign.cli import main
from mmalign.run_config import load_run_config
from mmalign.tracking import compare_curves, read_metrics
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
TWO_PROCESSES = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
"""Two CPU processes (gloo), which accelerate picks up; `accelerate launch --cpu` starts only one without MPI."""


@pytest.fixture
def config(tmp_path):
    """A tiny text GRPO config writing into tmp_path; returns a function that writes it with changes."""
    base = yaml.safe_load((ROOT / "configs/text/tiny_grpo.yaml").read_text())
    base["trainer"].update(output_dir=str(tmp_path / "runs"), steps=6, save_every=2, eval_every=3)
    base["task_args"]["eval_size"] = 4

    def write(**sections):
        cfg = json.loads(json.dumps(base))
        for section, values in sections.items():
            cfg[section].update(values) if isinstance(values, dict) else cfg.__setitem__(section, values)
        path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


def test_train_leaves_outputs(config, tmp_path):
    assert main(["train", str(config()), "trainer.name=out"]) == 0
    run = tmp_path / "runs/out"
    for item in ["config.yaml", "metrics.jsonl", "rewards.png", "eval_samples.jsonl", "final/config.json", "tb"]:
        assert (run / item).exists(), item
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_000004", "step_000006"]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "eval/reward" in r] == [0, 3, 6]
    assert "frac_reward_zero_std" in rows[1] and "time_sample" in rows[1]
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["name"] == "out"
    assert compare_curves({"a": run, "b": run / "metrics.jsonl"}, tmp_path / "cmp.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no metric 'nope'"):
        compare_curves({"a": run}, tmp_path / "cmp.png", key="nope")


def _run(cfg, *extra):
    return subprocess.Popen([sys.executable, "-m", "mmalign.cli", "train", str(cfg), *extra], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_curve(config, tmp_path):
    cfg = config(task_args={"rewards": [{"fn": "tiny:slow_bleu"}]}, trainer={"steps": 8})
    assert _run(cfg, "trainer.name=whole").wait(timeout=300) == 0
    proc = _run(cfg, "trainer.name=killed")
    ckpt = tmp_path / "runs/killed/checkpoints/step_000004"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_seen = [r["step"] for r in read_metrics(tmp_path / "runs/killed/metrics.jsonl")]
    assert max(steps_seen) < 8, "the run finished before it was killed; the test did not test anything"
    assert _run(cfg, "trainer.name=killed", "--resume").wait(timeout=300) == 0
    whole = read_metrics(tmp_path / "runs/whole/metrics.jsonl")
    resumed = read_metrics(tmp_path / "runs/killed/metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for a, b in zip(whole, resumed):
        for key in ("reward", "loss", "eval/reward"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)


def test_existing_run_is_not_overwritten(config, tmp_path, capsys):
    cfg = config()
    assert main(["train", str(cfg), "trainer.steps=2"]) == 0
    run = tmp_path / "runs/tiny_grpo"
    before = tree_digest(run)
    weights = load_file(run / "checkpoints/step_000002/trainable.safetensors")
    assert main(["train", str(cfg), "trainer.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "nothing was changed" in err, err
    assert tree_digest(run) == before  # every file of the run, byte for byte
    after = load_file(run / "checkpoints/step_000002/trainable.safetensors")
    assert all(torch.equal(weights[k], after[k]) for k in weights)


@pytest.mark.parametrize("override, message", [
    ("trainer.stepz=3", "unknown key 'stepz'"),
    ("trainer.steps=three", "trainer.steps: expected int"),
    ("grpo.scale_rewards=sometimes", "scale_rewards"),
    ("task_args.model=x.gguf", "exactly one of `model`"),
    ("task_args.model_config={} task_args.model=nowhere/model", "not found"),
    ("task_args.dataset=missing.jsonl", "missing.jsonl"),
])
def test_bad_config_gives_one_clear_message(config, capsys, override, message):
    code = main(["train", str(config()), *override.split()])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_exponent_floats_without_a_dot_are_floats():
    from mmalign.config import ConfigError, apply_overrides, from_dict
    from mmalign.run_config import TrainerConfig

    data = apply_overrides({}, ["lr=1e-3", "weight_decay=2E-2"])  # YAML 1.1 reads both as strings
    cfg = from_dict(TrainerConfig, data)
    assert cfg.lr == 1e-3 and cfg.weight_decay == 0.02
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(TrainerConfig, apply_overrides({}, ["lr=fast"]))
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(TrainerConfig, apply_overrides({}, ["steps=1e3"]))


def test_missing_config_file(capsys):
    assert main(["train", "no/such/config.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dataset_row_without_reference(config, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "hi", "references": ["hello"]}\n{"prompt": "bye"}\n')
    assert main(["train", str(config(task_args={"dataset": str(data)}))]) == 2
    err = capsys.readouterr().err
    assert "rows.jsonl:2" in err and "references" in err, err


@pytest.mark.parametrize("fn, message", [("tiny:nan_reward", "non-finite"), ("tiny:short_reward", "for 32 outputs")])
def test_bad_reward_keeps_checkpoints(config, tmp_path, capsys, fn, message, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cfg = config()
    assert main(["train", str(cfg), "trainer.steps=2"]) == 0
    ckpts = tmp_path / "runs/tiny_grpo/checkpoints"
    before = sorted(p.name for p in ckpts.iterdir())
    code = main(["train", str(cfg), "trainer.steps=4", f"task_args.rewards=[{{fn: '{fn}'}}]", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and fn.split(":")[1] in err, err
    assert sorted(p.name for p in ckpts.iterdir()) == before


FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP"}
"""What `accelerate launch --config_file configs/accelerate/fsdp.yaml` puts in each process's environment."""


def _update(out: Path, launch: list[str], *args: str, env: dict | None = None) -> dict[str, torch.Tensor]:
    run_ok([*launch, TESTS / "mp_update.py", out, *args], env={**ENV, **(env or {})}, cwd=TESTS)
    return load_file(out)


def _same_update(a: dict, b: dict, start: dict) -> None:
    assert a.keys() == b.keys() == start.keys()
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-3, "the update did not move the weights"
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


@pytest.mark.slow
@pytest.mark.parametrize("strategy, extra", [("ddp", []), ("fsdp", []), ("fsdp", ["lora"]), ("ddp", ["compiled"])],
                         ids=["ddp", "fsdp", "fsdp-lora", "ddp-compiled"])
def test_two_processes_make_the_same_update_as_one(tmp_path, strategy, extra):
    """DDP and FSDP2 (torch's fully_shard over gloo), the whole model and LoRA adapters, and DDP with compiled
    re-scoring: 2 processes, each with half the batch (and 2 micro-batches), give the update of one process on the
    whole batch."""
    lora = "lora" in extra
    one = _update(tmp_path / "one.safetensors", [sys.executable], "0", *extra)
    two = tmp_path / "two.safetensors"
    b = _update(two, TWO_PROCESSES, "2", *extra, env=FSDP if strategy == "fsdp" else None)
    _same_update(one, b, trainable_state(tiny_policy(seed=0, lora=lora)))
    ranks = [json.loads(Path(f"{two}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [m["sharded"] for m in ranks] == [strategy == "fsdp"] * 2  # FSDP really sharded the weights
    norms = [m["grad_norm"] for m in ranks]
    assert norms[0] == norms[1] and math.isfinite(norms[0])  # the norm of the reduced gradients, on every process


def test_compiled_scoring_under_fsdp_is_refused_by_name(tmp_path):
    proc = subprocess.run([*map(str, TWO_PROCESSES), str(TESTS / "mp_update.py"), str(tmp_path / "w"), "0",
                           "compiled"], env={**ENV, **FSDP}, cwd=TESTS, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "compiled re-scoring does not run under FSDP" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only launch")
def test_cli_under_torchrun_without_a_gpu_forms_one_two_process_run(config, tmp_path):
    """`trainer.cpu` left false on a machine without a GPU: the two processes still form one process group, so they
    share one run folder (a second, independent process would find the first one's run and refuse)."""
    cfg = config(trainer={"steps": 2, "save_every": 0, "eval_every": 0, "contexts_per_step": 2},
                 task_args={"record_rewards": True})
    run_ok([*TWO_PROCESSES, "-m", "mmalign.cli", "train", cfg, "trainer.name=two"], env=ENV, timeout=600)
    rows = read_metrics(tmp_path / "runs/two/metrics.jsonl")
    assert [r["step"] for r in rows if "reward" in r] == [1, 2]
    visits = json.loads((tmp_path / "runs/two/reward_trajectories.json").read_text())["visits"]
    assert sum(map(len, visits.values())) == 2 * 2  # LIMR's record holds both processes' contexts of both steps


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["text", "vlm", "diffusion", "video"])
def test_evaluation_is_split_over_processes_and_merged(tmp_path, domain):
    """2 processes evaluate disjoint halves of the held-out contexts; every process ends with the merged metrics of
    one process's evaluation and all its records, in order: the same completions, and the same images and clips
    (each context's noise has a seed of its own); per-kind means merge by their counts; the main process's `finish`
    writes every record. About 1 min per domain on one CPU thread (a run with 1, then with 2 processes)."""
    def ranks(out: Path, n: int) -> list[dict]:
        return [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(n)]

    cache = tmp_path / "cache"  # the embedded video models, built by the one-process run
    run_ok([sys.executable, TESTS / "mp_eval.py", domain, tmp_path / "one", cache], env=ENV, timeout=600)
    run_ok([*TWO_PROCESSES, TESTS / "mp_eval.py", domain, tmp_path / "two", cache], env=ENV, timeout=600)
    (one,), two = ranks(tmp_path / "one", 1), ranks(tmp_path / "two", 2)
    n = len(one["seen"])
    assert n >= 3 and [len(r["seen"]) for r in two] == [n // 2, n - n // 2]
    assert two[0]["seen"] + two[1]["seen"] == one["seen"]  # not repeated
    prompts = {"text": lambda rs: [r["prompt"] for r in rs], "vlm": lambda rs: [r["prompt"] for r in rs],
               "diffusion": lambda rs: [r[0] for r in rs][::2], "video": lambda rs: one["seen"][:len(rs)]}[domain]
    assert prompts(one["records"]) == one["seen"]
    for r in two:
        assert r["records"] == one["records"]
        assert r["metrics"].keys() == one["metrics"].keys()
        for k, v in one["metrics"].items():
            assert r["metrics"][k] == pytest.approx(v, abs=1e-6), k
    for k, count in one["counts"].items():  # per-task accuracy, physics means that skip clips without the block
        assert sum(r["counts"].get(k, 0) for r in two) == count, k
    written = tmp_path / "two.finish"
    if domain in ("text", "vlm"):
        assert len((written / "eval_samples.jsonl").read_text().splitlines()) == n
    elif domain == "diffusion":
        assert len((written / "eval_prompts.jsonl").read_text().splitlines()) == n
    else:
        assert (written / "samples_after.mp4").stat().st_size > 0


def _descendants(pid: int) -> list[int]:
    """The ids of every process below `pid` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@pytest.mark.slow
def test_fsdp_run_resumes_from_its_shards_on_the_same_curve_and_leaves_whole_final_weights(config, tmp_path):
    """2 processes under FSDP2: checkpoints hold each process's shards; SIGKILL + --resume continues the curve of an
    uninterrupted run; final/ is a whole transformers model that loads on one device."""
    from transformers import AutoModelForCausalLM

    cfg = config(task_args={"rewards": [{"fn": "tiny:slow_bleu"}]}, trainer={"steps": 4, "save_every": 2})
    env = {**ENV, **FSDP}

    def train(name: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([*TWO_PROCESSES, "-m", "mmalign.cli", "train", str(cfg), f"trainer.name={name}",
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    whole, killed = train("whole"), train("killed")
    ckpt = tmp_path / "runs/killed/checkpoints/step_000002"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    for pid in [killed.pid, *_descendants(killed.pid)]:  # the launcher and both processes (in their own sessions)
        os.kill(pid, signal.SIGKILL)
    killed.wait()
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]
    assert max(r["step"] for r in read_metrics(tmp_path / "runs/killed/metrics.jsonl")) < 4, "nothing was killed"
    resumed = train("killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    a, b = (read_metrics(tmp_path / f"runs/{n}/metrics.jsonl") for n in ("whole", "killed"))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        for key in ("reward", "loss", "eval/reward"):
            if key in x:
                assert x[key] == pytest.approx(y[key], abs=1e-6), (x["step"], key)
    last = tmp_path / "runs/whole/checkpoints/step_000004"
    assert sorted(p.name for p in last.glob("trainable_*.safetensors")) == ["trainable_0.safetensors",
                                                                          "trainable_1.safetensors"]
    shards = [load_file(last / f"trainable_{r}.safetensors") for r in (0, 1)]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "runs/whole/final")
    final = dict(model.named_parameters())
    for name, first in shards[0].items():  # FSDP2 shards along dim 0: the shards stacked are the whole tensor
        assert torch.equal(final[name.removeprefix("model.")], torch.cat([first, shards[1][name]])), name


@pytest.mark.slow
def test_fsdp_lora_run_leaves_the_whole_adapter(config, tmp_path):
    """LoRA under FSDP2 on 2 processes: final/ is the PEFT adapter, whole (each tensor = the processes' shards)."""
    cfg = config(task_args={"lora": {"rank": 4}}, trainer={"steps": 2, "save_every": 2, "eval_every": 0})
    run_ok([*TWO_PROCESSES, "-m", "mmalign.cli", "train", cfg, "trainer.name=lora"], env={**ENV, **FSDP}, timeout=300)
    run = tmp_path / "runs/lora"
    adapter = load_file(run / "final/adapter_model.safetensors")
    shards = [load_file(run / f"checkpoints/step_000002/trainable_{r}.safetensors") for r in (0, 1)]
    assert len(adapter) == len(shards[0]) > 0
    for name, first in shards[0].items():  # model.base_model.model.X.lora_A.default.weight -> base_model.model.X...
        key = name.removeprefix("model.").replace(".default.", ".")
        assert torch.equal(adapter[key], torch.cat([first, shards[1][name]])), name


def _launch(*args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *args]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
def test_shipped_fsdp_config_shards_and_makes_the_same_update(tmp_path):
    """`accelerate launch --config_file configs/accelerate/fsdp.yaml` on CPU processes: FSDP2 shards the policy and
    the update is the 1-process one."""
    launch = _launch("--config_file", str(ROOT / "configs/accelerate/fsdp.yaml"), "--num_processes", "2",
                     "--main_process_port", _port())
    out = tmp_path / "fsdp.safetensors"
    _same_update(_update(tmp_path / "one.safetensors", [sys.executable], "0"), _update(out, launch, "2"),
                 trainable_state(tiny_policy(seed=0)))
    assert json.loads(Path(f"{out}.rank1.json").read_text())["sharded"]


@pytest.mark.slow
def test_two_machines_on_one_host_make_the_same_update_as_one(tmp_path):
    """The shipped multi-node config, two machines of one process each (machine ranks 0 and 1 on 127.0.0.1)."""
    out, port = tmp_path / "nodes.safetensors", _port()
    procs = [subprocess.Popen(
        [*_launch("--config_file", str(ROOT / "configs/accelerate/multi_node.yaml"), "--num_processes", "2",
                  "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port),
         str(TESTS / "mp_update.py"), str(out), "2"], env=ENV, cwd=TESTS, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [m["processes"] for m in ranks] == [2, 2]  # one process group over both machines, not two runs
    _same_update(_update(tmp_path / "one.safetensors", [sys.executable], "0"), load_file(out),
                 trainable_state(tiny_policy(seed=0)))


def test_a_non_finite_loss_on_one_process_skips_the_step_on_all(tmp_path):
    out = tmp_path / "poisoned.safetensors"
    run_ok([*TWO_PROCESSES, TESTS / "mp_update.py", out, "0", "poison"], env=ENV, cwd=TESTS)
    ranks = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1)]
    assert [m["skipped_steps"] for m in ranks] == [1, 1], ranks
    assert all(math.isnan(m["grad_norm"]) for m in ranks), ranks  # the same (non-finite) all-reduced norm
    after, start = load_file(out), trainable_state(tiny_policy(seed=0))
    assert all(torch.equal(after[k], start[k]) for k in start), "a skipped step changed the weights"


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(config, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cfg = config(task_args={"rewards": [{"fn": "tiny:huge_reward"}]})
    # 2 epochs x 2 minibatches = 4 optimizer steps per iteration: iteration 1 skips 4, iteration 2 reaches 6
    code = main(["train", str(cfg), "trainer.steps=4", "trainer.save_every=1", "trainer.max_skipped_steps=6"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite" in err and "6 optimizer steps in a row" in err and "Traceback" not in err, err
    run = tmp_path / "runs/tiny_grpo"
    rows = strict_rows(run / "metrics.jsonl")  # valid JSON: non-finite values are null
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1]
    assert train_rows[0]["skipped_steps"] == 4 and train_rows[0]["loss"] is None and train_rows[0]["reward"] is None
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000001"]  # the last good checkpoint stays
    saved = load_file(run / "checkpoints/step_000001/trainable.safetensors")
    start = trainable_state(Trainer(load_run_config(cfg)).policy)  # the run's initial weights
    assert all(torch.equal(saved[k], start[k]) for k in start), "a skipped step changed the weights"
    assert not (run / "final").exists()


def test_resume_applies_changed_hyperparameters_and_refuses_fixed_ones(config, tmp_path, capsys):
    cfg = config()
    run = tmp_path / "runs/tiny_grpo"
    assert main(["train", str(cfg), "trainer.steps=2"]) == 0
    before = tree_digest(run)
    assert main(["train", str(cfg), "trainer.steps=4", "trainer.seed=1", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "trainer.seed: 0 -> 1" in err and "nothing was changed" in err, err
    assert tree_digest(run) == before
    assert main(["train", str(cfg), "trainer.steps=4", "trainer.lr=1e-6", "trainer.weight_decay=0.1",
                 "trainer.adam_betas=[0.8, 0.9]", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "trainer.lr changed from 0.003 to 1e-06" in err and "trainer.weight_decay changed" in err, err
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["lr"] for r in rows if "lr" in r] == [3e-3, 3e-3, 1e-6, 1e-6]
    recorded = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert (recorded["lr"], recorded["weight_decay"], recorded["adam_betas"]) == (1e-6, 0.1, [0.8, 0.9])
    groups = json.loads((run / "checkpoints/step_000004/optimizer.json").read_text())["param_groups"]
    assert [(g["lr"], g["weight_decay"], list(g["betas"])) for g in groups] == [(1e-6, 0.1, [0.8, 0.9])]
