# The pmkeys image: one image, three components (`pmkeys operator|verifier|ui`, the chart's args).
#
#   docker build -t registry.example.com/pmkeys:0.1.0 .
#
# This repository's CI has no Docker: `make image` (hack/build-images.sh) builds this same file
# with buildah from a local Debian base tagged as the FROM image, and the in-pod tests
# (tests/node/) run the chart with it. Pin both base images by digest in your build.

# -- build: install pmkeys and its dependencies into a self-contained virtualenv --------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/pmkeys
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/pmkeys/bin/pip install . \
 && find /opt/pmkeys -name '__pycache__' -type d -prune -exec rm -rf {} +

# -- run: the same Python, the virtualenv, nothing else; a non-root user -----------------------
FROM python:3.11-slim-bookworm
COPY --from=build /opt/pmkeys /opt/pmkeys
ENV PATH=/opt/pmkeys/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The chart runs every container as 65532 with a read-only root filesystem and /tmp as emptyDir.
# The uid gets a name (pmkeys), so tools that look the user up find one; pmkeys itself never
# depends on it (the kopf peering identity comes from the pod name).
RUN groupadd --system --gid 65532 pmkeys \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pmkeys
USER 65532:65532
EXPOSE 8080 8090 9090
ENTRYPOINT ["pmkeys"]
CMD ["operator"]
