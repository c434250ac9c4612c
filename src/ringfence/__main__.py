"""``python -m ringfence``: the same as the ``ringfence`` console script."""

from ringfence.cli.entry import main

main()
