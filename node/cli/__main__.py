"""``python -m node.cli``: the ``myonode`` command (how ``myonode serve`` starts its worker processes)."""

from node.cli import main

main()
