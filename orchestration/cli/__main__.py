"""``python -m orchestration.cli``: the same as the ``streamtune`` command."""

from orchestration.cli.app import main

main()
