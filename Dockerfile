# The one image that both the operator (`deltaforge operator`) and the workers (`deltaforge run`)
# run. Build: docker build -t ghcr.io/deltaforge/deltaforge:<version> .
#
# Two stages: the first builds a wheel of the project and installs it with its dependencies into
# a virtualenv; the second copies only that virtualenv onto a slim Python, so no compiler, pip
# cache or source tree ships. The bytecode is compiled at build time, since the root filesystem
# is read-only at run time (the worker's pod runs with readOnlyRootFilesystem).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime ./runtime
COPY operator ./operator
RUN python -m venv /opt/deltaforge \
 && /opt/deltaforge/bin/pip install --upgrade pip \
 && /opt/deltaforge/bin/pip install . \
 && /opt/deltaforge/bin/python -m compileall -q /opt/deltaforge

FROM python:3.11-slim-bookworm
# A fixed, unprivileged uid: the pod templates set runAsNonRoot and this id.
RUN groupadd --system --gid 65532 deltaforge \
 && useradd --system --uid 65532 --gid deltaforge --home-dir /nonexistent --shell /usr/sbin/nologin deltaforge
COPY --from=build /opt/deltaforge /opt/deltaforge
ENV PATH=/opt/deltaforge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 9000 8080
ENTRYPOINT ["deltaforge"]
CMD ["--help"]
