"""``python -m ringfence``: the same as the ``ringfence`` console script."""

from ringfence.cli.main import main

main()
