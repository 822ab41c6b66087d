"""Modelled weak devices and links: every scheme's latency, energy and memory per inference.

`profiles` loads device and link profiles (YAML data with sources), `model` turns a scheme's
workload into latency, energy and memory, `cuts` chooses a Neurosurgeon-style split point,
`compare` evaluates every measured scheme on one device and link, `report` writes markdown and
plots. Only `report` needs matplotlib and only `fleet` needs the runtime; nothing here imports torch.
"""
