# The device agent: numpy, ONNX Runtime and gRPC only (the `device` extra; no torch, no Ray).
#   docker build -f deploy/device.Dockerfile -t agilenn-device:0.1.0 .
# Run it with the bundle, the config, the CA certificate and the device's token mounted:
#   docker run -i -v $PWD/bundles/fashion-mnist:/bundle:ro -v $PWD/deploy/device.yaml:/etc/agilenn/device.yaml:ro \
#     -v $PWD/certs/ca.pem:/etc/agilenn/ca.pem:ro -v $PWD/cam-17.token:/run/secrets/agilenn-token:ro agilenn-device:0.1.0
# It reads .npy arrays on standard input and writes one JSON line per input on standard output.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS install
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# only the packages a device runs: the core, the device agent and the `agilenn` command
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt deploy/
COPY agilenn/ agilenn/
COPY device_agent/ device_agent/
COPY commands/ commands/
# into a prefix of its own, so the final image gets the installed files and not the build's leftovers;
# every package pinned by the images' one constraints file
RUN pip install --prefix=/install -c deploy/constraints.txt '.[device]'

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=install /install /usr/local
# a fixed uid and gid, so that mounted files can be made readable to it alone (and the group has a name)
RUN groupadd --system --gid 10001 agilenn \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin agilenn
USER 10001:10001
ENTRYPOINT ["agilenn", "device", "run", "--config", "/etc/agilenn/device.yaml"]
CMD ["--bundle", "/bundle", "--source", "-", "--ca", "/etc/agilenn/ca.pem", "--token-file", "/run/secrets/agilenn-token"]
