#!/usr/bin/env bash
# Runs a training command on every worker of a TPU VM pod slice (one JAX process per host; JAX
# finds its peers itself). The repo must be at the same path on every worker, installed with
# `make install` plus `pip install "jax[tpu]"` matching requirements.txt's jax.
#
#   launch/tpu_pod.sh my-pod us-central2-b "t2l train --config configs/t2l/smollm2_suite.py --config.mesh.fsdp=-1 --config.mesh.data=1"
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE 'COMMAND'" >&2
  exit 2
fi
name=$1 zone=$2 command=$3
repo=${REPO_DIR:-$(pwd)}
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all \
  --command "cd '$repo' && . .venv/bin/activate && $command"
