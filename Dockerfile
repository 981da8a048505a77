# kubefence: the admission webhook image. Two stages on the same base: the first builds the wheel
# from this checkout and installs it with its dependencies into /opt/venv; the second copies only
# that venv. Runs as a numeric non-root user and writes nothing outside its mounts and /tmp, so the
# chart's read-only root filesystem holds.
#
#   docker build -t kubefence:dev .                                        (default base)
#   hack/build-image.sh                                    (here: buildah + a debootstrap base)
#
# BASE must provide python3 (3.11, like python:3.11-slim-bookworm and Debian bookworm's python3)
# with the venv module.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . /src
# The project's pins: requirements.lock (pip-compile --generate-hashes) when the checkout has one,
# else the version ranges of pyproject.toml.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/dist /src \
 && if [ -f /src/requirements.lock ]; then \
        /opt/venv/bin/pip install --require-hashes -r /src/requirements.lock \
     && /opt/venv/bin/pip install --no-deps /tmp/dist/kubefence-*.whl; \
    else \
        /opt/venv/bin/pip install /tmp/dist/kubefence-*.whl; \
    fi \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/kubefence --version

FROM ${BASE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["kubefence", "serve"]
