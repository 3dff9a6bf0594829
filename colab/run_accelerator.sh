#!/usr/bin/env bash
# One command for a bare GPU or TPU machine that has this checkout, a data directory and its own jax:
# installs what is missing (keeping the machine's jax; no TensorFlow needed), checks that jax sees the
# accelerator, trains CONFIG in WORKDIR under train.time_budget=BUDGET_MIN minutes, evaluates the best checkpoint
# on Middlebury 2005, exports DSRNet, and leaves console.log, eval/, dsrnet/ and summary.md in OUTDIR.
#
#   bash colab/run_accelerator.sh CONFIG WORKDIR OUTDIR [BUDGET_MIN] [--data_dir DIR] [--set FIELD=VALUE ...]
#
# The same command again resumes the training exactly. Every option: python -m dsr_jax.accelerator --help.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash colab/run_accelerator.sh CONFIG WORKDIR OUTDIR [BUDGET_MIN] [options of python -m dsr_jax.accelerator]" >&2
  exit 2
fi
config=$1 workdir=$2 outdir=$3
shift 3
budget=0
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  budget=$1
  shift
fi
# Paths stay the caller's (the command makes them absolute); the checkout is found through PYTHONPATH.
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m dsr_jax.accelerator --config "$config" --workdir "$workdir" --output "$outdir" --budget "$budget" "$@"
