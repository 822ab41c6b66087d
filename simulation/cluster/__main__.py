import sys

from simulation.cluster.cli import main

sys.exit(main())
