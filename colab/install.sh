#!/usr/bin/env bash
# Installs this checkout into a Colab (or any) runtime and keeps the runtime's own jax/jaxlib (built for its
# TPU or GPU; PyPI's would be a CPU build) and TensorFlow (tensorflow-cpu would replace Colab's). Only the
# requirements the runtime does not already satisfy are installed. The notebook's first cell does the same
# for a git URL or a wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps -e .
python3 -c 'from dsr_jax import notebook; notebook.install_requirements(); notebook.check_runtime()'
