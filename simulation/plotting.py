"""matplotlib for the simulation's plots, imported only when a plot is drawn (it is an extra)."""

from __future__ import annotations


class ReportUnavailable(RuntimeError):
    """The plotting library is missing."""


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; ReportUnavailable names the extra when missing."""
    try:
        import matplotlib
    except ImportError:
        raise ReportUnavailable("--report draws its plots with matplotlib: pip install 'agilenn[sim]' "
                                "(or pip install matplotlib)") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
