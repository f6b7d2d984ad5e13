# syntax=docker/dockerfile:1
# nas-service: one image for the controller (`nas up`), the Ray head and the Ray workers (`nas worker`).
#
#   docker build -t nas-service .                                   # CPU torch (controller, Ray head, CPU workers)
#   docker build -t nas-service-gpu --build-arg TORCH_VARIANT=cu128 .  # CUDA torch (GPU workers)
#
# TORCH_VARIANT names a wheel index of download.pytorch.org: cpu, or a CUDA build published for TORCH_VERSION.
# Every node of one Ray cluster must run the same Python and Ray: RAY_VERSION pins it for CPU and GPU images alike.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG RAY_VERSION=2.60.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    RAY_USAGE_STATS_ENABLED=0

# torch first, pinned, from its own index: the project's `torch>=2.4` is then already satisfied, and pip never pulls
# the default (CUDA) build from PyPI into a CPU image. The constraints keep torch and Ray where they are.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
 && printf 'torch==%s\nray==%s\n' "${TORCH_VERSION}" "${RAY_VERSION}" > /etc/pip-constraints.txt
ENV PIP_CONSTRAINT=/etc/pip-constraints.txt

WORKDIR /opt/nas-service
COPY pyproject.toml README.md ./
COPY nas ./nas
COPY searchspaces ./searchspaces
COPY api ./api
COPY workers ./workers
COPY service ./service
RUN pip install ".[service]" \
 && python -c "import torch, ray, nas.cli, api.app; print('torch', torch.__version__, 'ray', ray.__version__)"

RUN useradd --create-home --uid 10001 --user-group nas \
 && mkdir -p /data /datasets \
 && chown nas:nas /data
USER nas
WORKDIR /home/nas

# NAS_DATA_DIR: the artifact store (and the SQLite database and local admin token of the embedded mode). Mount a
# volume there; in a cluster, one volume shared by the controller and every worker.
ENV NAS_DATA_DIR=/data
# API (`nas up`)
EXPOSE 8321

ENTRYPOINT ["nas"]
CMD ["up", "--host", "0.0.0.0", "--port", "8321"]
