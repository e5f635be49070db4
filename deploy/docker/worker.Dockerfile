# The worker image: `bertsweep-worker` with the libtorch it links (PyTorch 2.11.0), running as a
# non-root user, on the host's NVIDIA driver through the NVIDIA Container Toolkit. From the
# repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t bertsweep-worker:0.1.0 .
# Two CUDA flavours (deploy/README.md, "Images and GPUs", says which drivers and GPUs each runs):
#   default  CUDA 13.0: PyPI's torch wheel; driver >= 580; Turing (sm_75) and newer.
#   CUDA 12  older drivers (>= 525 via CUDA's minor-version compatibility; 550+ advised) and
#            Volta (V100, sm_70): PyTorch's cu126 wheel index and a CUDA 12.6 runtime base:
#     docker build -f deploy/docker/worker.Dockerfile -t bertsweep-worker:0.1.0-cu126 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#       --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04 .
#
# Base images are pinned by tag and digest, taken from public Dockerfiles that pin the same
# tags (no registry was reachable where this file was written); refresh a digest with
# `docker buildx imagetools inspect IMAGE:TAG`.

# 1. libtorch: the PyPI wheel torch==2.11.0 (the pairing tch 0.24 needs) and the nvidia-*
#    wheels it depends on, installed flat into /opt/torch (torch/ and nvidia/ side by side, as
#    torch's RPATH $ORIGIN/../../nvidia/... expects).
# The torch wheel's index (PyPI: CUDA 13.0) and the runtime base matching its CUDA major.
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:2ab6381d970b211fb93853796dc6707eb8a72575a375c422b17cf4d8b2641701
FROM python:3.13-slim-trixie@sha256:ffb752e139c0a19692a43af8d8523b274222dd68eebad5d583b45c2201c6e30a AS torch
ARG TORCH_INDEX_URL
# The nvidia-* wheels it pulls come from the same index, or from PyPI.
RUN pip install --no-cache-dir --target /opt/torch --index-url "$TORCH_INDEX_URL" \
      --extra-index-url https://pypi.org/simple torch==2.11.0 \
    && rm -f /opt/torch/torch/lib/libtorch_python.so \
    && find /opt/torch/nvidia \( -name include -o -name '*.a' \) -prune -exec rm -rf {} +

# 2. The worker, linked against /opt/torch/torch. worker/build.rs bakes the rpath
#    /opt/torch/torch/lib into the binary, so the runtime stage keeps that path.
FROM rust:1.95.0-trixie@sha256:0861191076afc8e2dfcf0bec6ad6c2dec8494b3a1e9249729e1989690afed5ec AS build
# An explicit LIBTORCH wins over the relative one in .cargo/config.toml (.venv is not copied).
ENV RUSTUP_TOOLCHAIN=1.95.0 CARGO_INCREMENTAL=0 LIBTORCH=/opt/torch/torch LIBTORCH_CXX11_ABI=1
COPY --from=torch /opt/torch /opt/torch
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=bertsweep-worker-target \
    cargo build --locked --release -p bertsweep-worker \
    && install -D -m 0755 target/release/bertsweep-worker /out/bertsweep-worker

# 3. Runtime. The `base` flavour of CUDA (driver hooks, cudart) is enough: the torch wheel
#    brings cuBLAS, cuDNN, NCCL and the rest in /opt/torch/nvidia.
# hadolint ignore=DL3006
FROM ${CUDA_IMAGE}
RUN groupadd --system --gid 65532 bertsweep \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /var/cache/bertsweep \
       --shell /usr/sbin/nologin bertsweep \
    && install -d -m 0700 -o bertsweep -g bertsweep /var/cache/bertsweep
COPY --from=torch /opt/torch/torch/lib /opt/torch/torch/lib
COPY --from=torch /opt/torch/nvidia /opt/torch/nvidia
COPY --from=build /out/bertsweep-worker /usr/local/bin/bertsweep-worker
USER 65532:65532
# Downloaded study inputs and Hugging Face models; a volume keeps them across restarts.
ENV BERTSWEEP_CACHE_DIR=/var/cache/bertsweep HF_HOME=/var/cache/bertsweep/huggingface
VOLUME ["/var/cache/bertsweep"]
# Opt-in Prometheus endpoint (--metrics-listen 0.0.0.0:9465).
EXPOSE 9465
# A worker has no port to probe; it exits on its own when its --study ends.
HEALTHCHECK NONE
# Connection flags come from the orchestrator (deploy/compose, deploy/k8s).
ENTRYPOINT ["/usr/local/bin/bertsweep-worker"]
