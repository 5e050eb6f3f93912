"""The `jit` command's entry point: `jit hint` without loading the rest of the CLI.

`jit hint` runs before every ssh an ssh_config Match line covers, so it must not
pay for click and requests (about 60 ms of imports); every other subcommand goes
to jit_hooks.cli.jit as before.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["hint"]:
        from jit_hooks.cli.hint import main as hint_main

        return hint_main(args[1:])
    from jit_hooks.cli.jit import main as jit_main

    return jit_main(argv)


if __name__ == "__main__":
    sys.exit(main())
