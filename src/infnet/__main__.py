"""`python -m infnet`: the `infnet` command, so that `torchrun -m infnet train ...` works."""

from infnet.cli import main

main()
