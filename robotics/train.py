"""`python -m mmalign.robotics.train CONFIG [key=value ...]`: one online preference-RL experiment (recipe.py)."""

from __future__ import annotations

import sys

from mmalign.robotics.recipe import load_config, train

from mmalign.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    if "--resume" in args:
        print("error: this recipe cannot resume yet; start the run again under a new name.", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0], args[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run folder: {train(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
