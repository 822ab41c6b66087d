"""A real two-node Ray cluster on one machine, serving agilenn (needs root and `ip`); the same as
`python -m simulation.cluster`, where the cluster lives (simulation/cluster/).

    sudo .venv/bin/python scripts/local_cluster.py failover [--failure power_off] [--security plaintext]
    sudo .venv/bin/python scripts/local_cluster.py up      # stays up until Ctrl-C; prints its addresses
    sudo .venv/bin/python scripts/local_cluster.py down    # removes what a crashed run left
"""

import sys

from simulation.cluster.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="local_cluster.py"))
