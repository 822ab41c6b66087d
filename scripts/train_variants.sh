#!/usr/bin/env bash
# Fine-tune the AgileNN variants of configs/variants/ from the base split (configs/fashion_mnist_base.yaml,
# in runs/fashion-mnist-base, trained first when not there) and export each to bundles/variants/<name>.
# Rerunning resumes each from its run folder (runs/<name>).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for config in "${@:-configs/variants/*.yaml}"; do
  for file in $config; do
    name=$(basename "$file" .yaml)
    [ -f "bundles/variants/$name/manifest.json" ] && { echo "== $name: exported already"; continue; }
    echo "== $name $(date +%T)"
    "$PY" -m commands.cli partition --config "$file" --out "bundles/variants/$name" --overwrite --quiet
  done
done
