# The cloud workers: Ray, ONNX Runtime, gRPC and Prometheus metrics (the `cloud` extra).
#   docker build -f deploy/cloud.Dockerfile -t agilenn-cloud:0.1.0 .      (BuildKit: Docker 23 or later)
# One image for the Ray head and the Ray workers: Ray needs the same Ray and Python on every node.
# On Kubernetes the RayCluster (deploy/kubernetes/raycluster.yaml) gives the command; the CMD below
# serves on one machine, Ray started in-process, with the bundle, TLS files and token file mounted.
ARG RAY_VERSION=2.60.0
ARG RAY_IMAGE=rayproject/ray:${RAY_VERSION}-py311-cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The agilenn wheel, built as root in a plain Python image: the Ray image's user could not write the
# build tree that pip makes in a source folder it does not own.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt deploy/
COPY agilenn/ agilenn/
COPY cloud_worker/ cloud_worker/
COPY commands/ commands/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${RAY_IMAGE}
# re-declared: an ARG before the first FROM is not visible inside a stage
ARG RAY_VERSION=2.60.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The Ray image's own non-root user `ray` (uid 1000, group users) owns its Python environment;
# numeric, so that Kubernetes' runAsNonRoot can check it.
USER 1000:100
# The wheel with the cloud extra, mounted rather than copied so no layer keeps it, every package pinned
# by the images' one constraints file. Ray stays pinned to the base image's version: a driver or node of
# another Ray version cannot join the cluster.
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    --mount=type=bind,from=wheel,source=/src/deploy/constraints.txt,target=/tmp/constraints.txt \
    pip install -c /tmp/constraints.txt "$(ls /wheels/agilenn-*.whl)[cloud]" "ray[default]==${RAY_VERSION}"
WORKDIR /home/ray
# worker i serves gRPC on 50051+i and metrics on 9464+i (two workers by default)
EXPOSE 50051 50052 9464 9465
CMD ["agilenn", "cloud", "serve", "--bundle", "/bundle", "--host", "0.0.0.0", "--port", "50051", "--workers", "2", \
     "--metrics-port", "9464", "--tls-cert", "/etc/agilenn/tls/tls.crt", "--tls-key", "/etc/agilenn/tls/tls.key", \
     "--tokens", "/etc/agilenn/tokens/tokens.yaml"]
