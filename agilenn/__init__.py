"""agilenn: agile offloading of neural-network inference from weak devices (AgileNN, MobiCom'22).

This package is the core that every side imports: the payload codec (`codec`), the bundle
manifest (`bundle`), the dataset registry (`datasets`), the offline prediction and evaluation
primitives shared by export and `agilenn evaluate` (`predict`), the one ONNX Runtime session
factory (`onnx_sessions`), the one YAML-to-pydantic loader (`config_files`), the command-line
flags read from the config models and the default bundle (`cli_flags`), the measured-schemes
file (`measured`) and the generated wire stubs (`v1`). It imports no role package and never
torch or ray: torch lives in `partitioner`, ray in `cloud_worker`, the command line in
`commands`. The layers are import-linter contracts (pyproject.toml, `lint-imports`); see
docs/layout.md.
"""

__version__ = "0.1.0"
