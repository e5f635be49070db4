#!/usr/bin/env bash
# Builds both images from the repository root, tagged with the workspace version (or $1):
#   deploy/docker/build.sh            -> bertsweep-coordinator:0.1.0, bertsweep-worker:0.1.0
#   deploy/docker/build.sh 0.1.0 registry.example.org/ml/   (a tag and a name prefix)
#   BERTSWEEP_CUDA=12 deploy/docker/build.sh   -> the worker for CUDA 12 drivers and Volta GPUs,
#                                                tagged 0.1.0-cu126 (deploy/README.md)
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}"
prefix="${2:-}"
docker build -f deploy/docker/coordinator.Dockerfile -t "${prefix}bertsweep-coordinator:$tag" .
case "${BERTSWEEP_CUDA:-13}" in
  13) docker build -f deploy/docker/worker.Dockerfile -t "${prefix}bertsweep-worker:$tag" . ;;
  12)
    docker build -f deploy/docker/worker.Dockerfile -t "${prefix}bertsweep-worker:$tag-cu126" \
      --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
      --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 .
    ;;
  *) echo "error: BERTSWEEP_CUDA=${BERTSWEEP_CUDA} is not a flavour; use 13 (default) or 12" >&2; exit 2 ;;
esac
