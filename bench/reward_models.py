"""The reward-model tables of docs/reward-models.md, over seeds.

    python bench/reward_models.py hacking --seeds 0 1 2      # BRME vs one BT proxy under GRPO, judged by BLEU
    python bench/reward_models.py seq2seq --seeds 0 1 2      # seq2seq RM vs the BT proxy, GRPO and PPO, by BLEU
    python bench/reward_models.py seq2seq --seeds 0 1 2 --pairs 1000   # the same on 1000 pairs
    python bench/reward_models.py mpo --seeds 0 1 2          # MPO's evolving rubric vs a fixed one (SmolLM2 judge)
    python bench/reward_models.py principles --seeds 0 1 2   # RLBFF vs BT accuracy, and GRPO on chosen principles

`hacking` trains configs/text/tiny_bt_proxy.yaml and configs/text/tiny_brme.yaml (same pairs, same policy seed) and
prints per run the held-out proxy reward and held-out BLEU (the true metric) at every evaluation, then a summary: BLEU
at the start, its peak and the end, and whether the run was exploited (proxy up, true BLEU down from its peak by
more than 0.01 at the end). `seq2seq` does the same for the sequence-to-sequence reward model against the BT proxy
of the same pairs, under GRPO (summed token rewards) and PPO (token rewards; the BT proxy's one reward on the last
token); `mpo` for MPO's evolving rubric against the fixed hand-written one, the proxy being the SmolLM2 judge and
the rules the meta step added printed per run. `principles` prints the held-out accuracy of an RLBFF principle
model and of a BT model trained on the same responses, then GRPO with configs/text/tiny_principles.yaml: the
verifiers' pass rate of the chosen principles on held-out prompts over training.
"""

import argparse
import statistics
import sys
import tempfile

import torch

from mmalign.algorithms.reward_model import RewardModelConfig, train_reward_model
from mmalign.run_config import load_run_config
from mmalign.text.reward_models import (
    PRINCIPLES,
    PrincipleReward,
    TrainedClassifier,
    data_rows,
    model_texts,
    principle_examples,
    principle_pairs,
)
from mmalign.trainer import Trainer


def curve(config: str, seed: int, steps: int | None, overrides: list[str] = (), pairs: int = 0) -> list[dict]:
    """Evaluation metrics (held-out) at step 0 and every eval_every steps of a seeded run of `config`."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_run_config(config, [f"trainer.seed={seed}", f"trainer.output_dir={out}", *overrides]
                              + ([f"trainer.steps={steps}"] if steps else []))
        if "seed" in cfg.task_args.rewards[0]:  # a trained reward model's data, init and shuffling follow the seed
            cfg.task_args.rewards[0]["seed"] = seed
        if pairs:
            cfg.task_args.rewards[0]["num_pairs"] = pairs
        trainer = Trainer(cfg)
        points = [{"step": 0, **trainer.evaluate()}]
        for k in range(cfg.trainer.steps):
            trainer.step(k)
            if (k + 1) % cfg.trainer.eval_every == 0:
                points.append({"step": k + 1, **trainer.evaluate()})
        for edit in getattr(trainer.task.rewards[0][1], "edits", []):  # MPO's rubric edits
            print(f"  rule added at step {edit['step']}: {edit['rule']!r} (after {edit['response']!r})")
        for record in trainer.task.eval_records[:3]:
            print(f"  final greedy sample: {record['prompt']!r} -> {record['output']!r}")
    return points


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


ARMS = {
    "hacking": [("BT proxy", "configs/text/tiny_bt_proxy.yaml"), ("BRME", "configs/text/tiny_brme.yaml")],
    "seq2seq": [("GRPO, BT proxy", "configs/text/tiny_bt_proxy.yaml"),
                ("GRPO, seq2seq RM (summed token rewards)", "configs/text/tiny_seq2seq_grpo.yaml"),
                ("PPO, BT proxy", "configs/text/tiny_bt_proxy_ppo.yaml"),
                ("PPO, seq2seq RM (token rewards)", "configs/text/tiny_seq2seq_ppo.yaml")],
    "mpo": [("fixed rubric", "configs/text/tiny_mpo_fixed.yaml"), ("MPO", "configs/text/tiny_mpo.yaml")],
}
"""Each comparison's runs: (name, config); all of one comparison see the same pairs at each seed."""


def hacking(arms: list[tuple], seeds: list[int], steps: int | None, overrides: list[str], pairs: int = 0) -> None:
    summary = {}
    for name, config in arms:
        rows = []
        for seed in seeds:
            pts = curve(config, seed, steps, overrides, pairs)
            proxy = next(k for k in pts[0] if k.startswith("eval/reward/") and k != "eval/reward/bleu")
            print(f"{name} seed {seed}: " + "  ".join(
                f"{p['step']}: proxy {p[proxy]:+.3f} bleu {p['eval/reward/bleu']:.3f}" for p in pts), flush=True)
            bleu = [p["eval/reward/bleu"] for p in pts]
            exploited = pts[-1][proxy] > pts[0][proxy] and bleu[-1] < max(bleu) - 0.01
            rows.append((bleu[0], max(bleu), bleu[-1], bleu[-1] - bleu[0], exploited))
        summary[name] = rows
    print("\n| reward | held-out BLEU at start | peak | end | end - start | runs exploited |")
    print("|---|---|---|---|---|---|")
    for name, rows in summary.items():
        cols = [spread([r[i] for r in rows]) for i in range(4)]
        print(f"| {name} | " + " | ".join(cols) + f" | {sum(r[4] for r in rows)} of {len(rows)} |")


def accuracy(seed: int, train_rows: int) -> dict[str, tuple[float, float, float]]:
    """Held-out accuracy of RLBFF, of a BT model on the same train responses, and of the majority label (0.5 for
    pairs), per principle set."""
    rows, held = data_rows()
    names = list(PRINCIPLES)
    rlbff = PrincipleReward(principles=names, seed=seed, train_rows=train_rows)
    pairs = principle_pairs(rows[:train_rows], names, seed)  # the same responses as rlbff.examples
    bt = TrainedClassifier()
    cfg = RewardModelConfig(lr=3e-3, epochs=4, batch_size=32, seed=seed)
    bt.fit(model_texts(rows + held), 1, lambda fn, params: train_reward_model(fn, params, pairs, cfg), seed, 32)
    print(f"seed {seed}: {len(rlbff.examples)} entailment labels, {len(pairs)} BT pairs", flush=True)
    out = {}
    examples = principle_examples(held, names, seed=1000 + seed)
    probs = rlbff.outputs([e[0] for e in examples]).view(-1, len(names)) > 0
    labels = torch.tensor([e[1] for e in examples]).view(-1, len(names)).bool()
    for i, n in enumerate(names):
        yes = float(labels[:, i].float().mean())
        hits = float((probs[:, i] == labels[:, i]).float().mean())
        out[f"entailment: {n}"] = (hits, float("nan"), max(yes, 1 - yes))
    for subset in [names] + [[n] for n in names]:
        test = principle_pairs(held, subset, seed=1000 + seed)
        chosen = [p[0] for p in test]
        rejected = [p[1] for p in test]
        ctx = [{"prompt": c[0], "references": r["references"]} for c, r in zip(chosen, _rows_of(test, held))]
        r_c = rlbff.probabilities(ctx, [c[1] for c in chosen], subset).sum(1)
        r_r = rlbff.probabilities(ctx, [r[1] for r in rejected], subset).sum(1)
        b_c, b_r = bt.outputs(chosen), bt.outputs(rejected)
        key = "pairs: all principles" if len(subset) > 1 else f"pairs: {subset[0]}"
        out[key] = (float((r_c > r_r).float().mean()), float((b_c > b_r).float().mean()), 0.5)
    return out


def _rows_of(pairs: list[tuple], rows: list[dict]) -> list[dict]:
    by_prompt = {r["prompt"]: r for r in rows}
    return [by_prompt[p[0][0]] for p in pairs]


def principles(seeds: list[int], steps: int | None, train_rows: int, overrides: list[str]) -> None:
    results = [accuracy(seed, train_rows) for seed in seeds]
    print("\n| held-out accuracy | RLBFF principle model | BT model, same responses | majority label / chance |")
    print("|---|---|---|---|")
    for key in results[0]:
        bt = [r[key][1] for r in results]
        print(f"| {key} | {spread([r[key][0] for r in results])} | "
              f"{spread(bt) if bt[0] == bt[0] else 'n/a (one score, no principle)'} | "
              f"{spread([r[key][2] for r in results])} |")
    runs = []
    for seed in seeds:
        pts = curve("configs/text/tiny_principles.yaml", seed, steps, overrides)
        print(f"RLBFF GRPO seed {seed}: " + "  ".join(
            f"{p['step']}: rm {p['eval/reward/principles']:.3f} pass {p['eval/reward/principle_pass']:.3f}"
            for p in pts), flush=True)
        runs.append((pts[0]["eval/reward/principle_pass"], pts[-1]["eval/reward/principle_pass"]))
    print("\n| GRPO on the chosen principles | held-out pass rate at start | end | end - start |")
    print("|---|---|---|---|")
    print(f"| one_sentence, no_question, short | {spread([r[0] for r in runs])} | {spread([r[1] for r in runs])} | "
          f"{spread([r[1] - r[0] for r in runs])} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=[*ARMS, "principles"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the config's)")
    parser.add_argument("--train-rows", type=int, default=100, help="rows the principle and BT models learn from")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", nargs="+", metavar="NAME", help="run only the arms of these names")
    parser.add_argument("--pairs", type=int, default=0, help="preference pairs of the trained reward models (0: the "
                        "configs' 64)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides of the GRPO runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.table in ARMS:
        arms = [a for a in ARMS[args.table] if not args.arms or a[0] in args.arms]
        hacking(arms, args.seeds, args.steps, args.set, args.pairs)
    else:
        principles(args.seeds, args.steps, args.train_rows, args.set)


if __name__ == "__main__":
    sys.exit(main())
