"""`python -m mmalign.robotics.train CONFIG [key=value ...]`: one online preference-RL experiment (recipe.py)."""

from __future__ import annotations

import sys

from mmalign.robotics.recipe import load_config, train

from mmalign.cli import run_recipe


def main(argv: list[str] | None = None) -> int:
    return run_recipe(argv, __doc__, load_config, lambda cfg, command: train(cfg))


if __name__ == "__main__":
    sys.exit(main())
