#!/usr/bin/env bash
# Make sure the Fashion-MNIST files from Debian's dataset-fashion-mnist package are present.
set -euo pipefail
dir="${AGILENN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ -f "$dir/t10k-images-idx3-ubyte.gz" ] && [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing dataset-fashion-mnist (Debian package) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    exit 0
fi
echo "Fashion-MNIST not found in $dir." >&2
echo "Install it with: sudo apt-get install -y dataset-fashion-mnist" >&2
echo "or set AGILENN_FASHION_MNIST_DIR to a folder with the four gzipped IDX files." >&2
exit 1
