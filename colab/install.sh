#!/usr/bin/env bash
# Installs dsr_jax into a Colab (or any) runtime WITHOUT replacing its jax: the runtime's jax/jaxlib are
# built for its accelerator (TPU or GPU), and `pip install -r requirements.txt` would swap in a CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -vE '^\s*(jax|jaxlib)\b' requirements.txt > /tmp/dsr_jax_requirements.txt
python3 -m pip install -q -r /tmp/dsr_jax_requirements.txt
python3 -m pip install -q --no-deps -e .
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())'
