#!/usr/bin/env bash
# Installs the Debian packages ldm_jax reads offline: Fashion-MNIST (IDX files under
# /usr/share/datasets/fashion-mnist). Skips apt when the files are already there.
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq dataset-fashion-mnist
