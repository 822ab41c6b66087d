"""agilenn: agile offloading of neural-network inference from weak devices (AgileNN, MobiCom'22).

This package is the small leaf that every side imports: the payload codec, the bundle
manifest, the dataset registry and the command line. It needs numpy and the entropy coder
only; torch lives in `partitioner`, ray in `cloud_worker`.
"""

__version__ = "0.1.0"
