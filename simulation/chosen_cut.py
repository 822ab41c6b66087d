"""`python -m simulation.chosen_cut MEASURED DEVICE LINK`: print the cut of the reference network that
`agilenn simulate` chooses for the layer split on that device and link (scripts export it there)."""

from __future__ import annotations

import sys

from agilenn.measured import load_measured
from simulation.compare import split_cuts
from simulation.cuts import choose_cut
from simulation.profiles import load_device, load_link


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    measured, device, link = args
    cuts = split_cuts(load_measured(measured))
    print(choose_cut(cuts, load_device(device), load_link(link), load_device("host")).cut.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
