"""``python -m deepagent_temporal.contract FILE...``: regenerate the env table in docs."""

import sys

from deepagent_temporal.contract.env import with_env_table


def main(paths: list[str]) -> int:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        new = with_env_table(old)
        if new != old:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"updated {path}")
    return 0


raise SystemExit(main(sys.argv[1:]))
