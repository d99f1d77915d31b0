#!/usr/bin/env bash
# Installs everything proxyless_tf needs on a fresh Debian machine: Fashion-MNIST from
# Debian, a virtual environment with the pinned requirements, and this package (editable).
# The venv lives outside the checkout so every clone on the machine reuses it (~2.7 GB).
# Usage: bash install.sh [--no-editable]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PROXYLESS_VENV:-$HOME/.venvs/proxyless_tf}"

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
if [ "${1:-}" != "--no-editable" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$here"
fi
echo "ready: $venv/bin/python"
