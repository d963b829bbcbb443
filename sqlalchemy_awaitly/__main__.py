"""``python -m sqlalchemy_awaitly``: the command line (see ``sqlalchemy-awaitly --help``)."""

from .cli import main

main()
