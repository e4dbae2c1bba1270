"""``python -m ssmvlm.cli``: the same as the ``ssmvlm`` command (for machines where it is not installed)."""

from ssmvlm.cli import main

main()
