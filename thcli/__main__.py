"""`python -m thcli ...` (also what torchrun launches: `torchrun ... -m thcli meta-train ...`)."""

from thcli.app import main

main()
