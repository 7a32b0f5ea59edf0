#!/usr/bin/env bash
# Installs the Debian packages ldm_jax reads offline:
#   dataset-fashion-mnist   Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist
#   fonts-noto-color-emoji  the Noto Color Emoji font rendered by the noto_emoji dataset
#   unicode-cldr-core       CLDR English emoji annotations (keywords in the emoji captions)
# A package whose marker file is already there is skipped; apt runs only when something is
# missing, so a second run (or a CI machine that has them all) does nothing. Idempotent.
set -euo pipefail
declare -A MARKERS=(
  [dataset-fashion-mnist]=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
  [fonts-noto-color-emoji]=/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
  [unicode-cldr-core]=/usr/share/unicode/cldr/common/annotations/en.xml
)
MISSING=()
for package in dataset-fashion-mnist fonts-noto-color-emoji unicode-cldr-core; do
  if [ ! -f "${MARKERS[$package]}" ]; then MISSING+=("$package"); fi
done
if [ "${#MISSING[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
