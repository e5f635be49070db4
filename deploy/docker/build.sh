#!/usr/bin/env bash
# Builds both images from the repository root, tagged with the workspace version (or $1):
#   deploy/docker/build.sh            -> bertsweep-coordinator:0.1.0, bertsweep-worker:0.1.0
#   deploy/docker/build.sh 0.1.0 registry.example.org/ml/   (a tag and a name prefix)
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)}"
prefix="${2:-}"
for image in coordinator worker; do
  docker build -f "deploy/docker/$image.Dockerfile" -t "${prefix}bertsweep-$image:$tag" .
done
