# epochgate: the sidecar, the controller and the operator commands in one image.
#
#   docker build -t epochgate:0.1.0 .
#   docker run --rm epochgate:0.1.0 --help                 # the sidecar (python -m sidecar)
#   docker run --rm epochgate:0.1.0 controller --help      # the controller, same entry point
#
# Two stages. The build stage turns the source into a wheel with the project's own build
# backend -- so if the project ever ships a compiled extension, that is the wheel built
# here (the stage has a compiler and Python headers) -- and installs it plus its
# dependencies' wheels into /opt/epochgate/lib. The run stage is a shell-less Python 3.11
# image running as an unprivileged user: the entry point is exec-form `python3 -m sidecar`,
# probes are HTTP and the Kubernetes preStop is a `sleep` action, so nothing needs a shell.
#
# Base images are build arguments: the defaults are the public Debian 12 images; on a machine
# without Docker Hub, scripts/build-image makes both from Debian's archive with debootstrap.
# Build and run stages must carry the same Python minor version (3.11: Debian 12's).
ARG BUILD_IMAGE=python:3.11-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
# libnghttp2's headers: the compiled HTTP/2 engine (sidecar/proxy/h2/engine_nghttp2.pyx) is built
# against Debian's libnghttp2 (setup.py skips it without them). The library itself goes to the run
# stage beside the packages (epochgate.libs: the run stage has no package manager), found through
# LD_LIBRARY_PATH. (Not pinned: Debian's security updates move the version; bookworm's is 1.52.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnghttp2-dev \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/epochgate/lib/epochgate.libs \
    && cp -L "$(gcc -print-file-name=libnghttp2.so.14)" /opt/epochgate/lib/epochgate.libs/
# A venv: Debian's own python3 refuses pip installs into the system (PEP 668).
# The [ngh2] extra: the HTTP/2 engine's fallback when the binding above cannot load (libnghttp2
# through the ngh2 package); without either, pure-Python h2 runs.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check "pip>=23" "wheel>=0.41" \
    && /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels '.[ngh2]' \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels \
        --target /opt/epochgate/lib 'epochgate[ngh2]' \
    && rm -rf /opt/epochgate/lib/bin \
    && LD_LIBRARY_PATH=/opt/epochgate/lib/epochgate.libs /opt/build/bin/python -c "import sys; sys.path.insert(0, '/opt/epochgate/lib'); import sidecar.__main__, gate, examples.kv.__main__, ngh2; from sidecar.proxy.h2 import engine; assert engine.get().NAME == 'nghttp2', engine.describe()"

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="epochgate" \
      org.opencontainers.image.description="epoch-gated sidecar proxy, migration controller and operator CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/epochgate/lib /opt/epochgate/lib
ENV PYTHONPATH=/opt/epochgate/lib \
    LD_LIBRARY_PATH=/opt/epochgate/lib/epochgate.libs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532 = distroless "nonroot"; numeric so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# proxy, admin (/metrics /healthz /readyz), control API (gRPC)
EXPOSE 8080 9901 50051
ENTRYPOINT ["/usr/bin/python3", "-m", "sidecar"]
