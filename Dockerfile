# The pmkeys image: one image, three components (`pmkeys operator|verifier|ui`, the chart's args).
#
#   docker build -t registry.example.com/pmkeys:0.1.0 .
#
# Not built or tested by this repository's CI: its machines have no container engine. What is
# tested is the code the image runs (the same `pmkeys` entry point) and the chart that runs it.
# Pin both base images by digest in your build.

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
USER 65532:65532
EXPOSE 8080 8090 9090
ENTRYPOINT ["pmkeys"]
CMD ["operator"]
