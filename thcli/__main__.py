"""`python -m thcli ...` (also what torchrun launches: `torchrun ... -m thcli meta-train ...`)."""

from thcli.app import main

if __name__ == "__main__":  # not when a spawned child process imports it as __mp_main__
    main()
