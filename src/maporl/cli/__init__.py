"""The `maporl` command: commands.py (the parser and the commands), verifier.py (`maporl verifier ...`),
args.py (what both share), rundir.py (where a command writes its run)."""

from maporl.cli.commands import main, parser

__all__ = ["main", "parser"]
