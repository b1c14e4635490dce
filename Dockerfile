# syntax=docker/dockerfile:1
# flowtrace in a container, with the pinned versions of docker/constraints-$FLAVOR.txt.
#
#   docker build --build-arg TORCH_INDEX_URL -t flowtrace:cpu .        # CPU image (default)
#   docker build --build-arg FLAVOR=cuda -t flowtrace:cuda .           # CUDA image for GPU hosts
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/results:/work/results" \
#       flowtrace:cpu flowtrace run recipes/cross_frame.py
#
# No index is named in this file: every index comes in as a build argument (`--build-arg NAME`
# alone takes NAME's value from the environment of `docker build`).
# Build arguments (TORCH_INDEX_URL needed for cpu, the others optional):
#   FLAVOR            cpu (default) or cuda: which lock file, and where torch comes from.
#   TORCH_INDEX_URL   index for torch + torchvision; needed for cpu: PyTorch's CPU wheel index
#                     (the --index-url PyTorch's install selector gives for Linux, pip, CPU; its
#                     torch==X+cpu has no CUDA libraries), or a mirror of it. Unset for cuda:
#                     torch from pip's own index, whose Linux wheels are CUDA builds that bring
#                     their CUDA libraries as pip packages (the host needs only the NVIDIA driver
#                     and container toolkit). Any index with the locked versions works for both.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS
#                     pip's own settings for everything else (a mirror, a wheel folder).
#   BASE_IMAGE        debian:bookworm-slim; another Debian/Ubuntu with python3 >= 3.11 works.
#   VCS_REF           the git commit, recorded as the image label org.opencontainers.image.revision.
# A CA bundle for a TLS-intercepting proxy goes in as a build secret, never into the image:
#   docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt …
#
# Results: the image runs in /work as the unprivileged user `flowtrace` (uid 1000); recipes are in
# /work/recipes, and runs write to /work/results: mount a host folder there.

ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG FLAVOR=cpu
ARG TORCH_INDEX_URL
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS

ENV VIRTUAL_ENV=/opt/flowtrace \
    PATH=/opt/flowtrace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    MPLCONFIGDIR=/cache/matplotlib

# Settings checked before anything is fetched.
RUN set -eu; \
    case "$FLAVOR" in cpu|cuda) ;; *) echo "FLAVOR must be cpu or cuda, not '$FLAVOR'" >&2; exit 1;; esac; \
    if [ "$FLAVOR" = cpu ] && [ -z "${TORCH_INDEX_URL:-}" ]; then \
        echo "FLAVOR=cpu needs --build-arg TORCH_INDEX_URL=...: PyTorch's CPU wheel index (the" \
             "--index-url PyTorch's install selector gives for Linux, pip, CPU) or a mirror of it;" \
             "any index with the locked torch works (pip's own default has its CUDA build: ~7 GB)" >&2; \
        exit 1; \
    fi

# System layer: python and an unprivileged user. /cache is writable by any uid (docker run --user).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash flowtrace \
    && mkdir -p /work/results /cache \
    && chown flowtrace:flowtrace /work /work/results \
    && chmod 1777 /cache

COPY docker/constraints-cpu.txt docker/constraints-cuda.txt /usr/local/share/flowtrace/

# Dependency layers, before the source: pip + setuptools, then torch (the big one), then the rest.
# `pip install -r` of the lock (not --no-deps): a torch wheel that needs more than the lock names
# (the CUDA build from pip's own index in a cpu image) still gets its libraries.
RUN --mount=type=secret,id=pip-ca \
    set -eu; if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    lock=/usr/local/share/flowtrace/constraints-$FLAVOR.txt; \
    pip install --no-cache-dir --disable-pip-version-check -c "$lock" pip setuptools

RUN --mount=type=secret,id=pip-ca \
    set -eu; if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    lock=/usr/local/share/flowtrace/constraints-$FLAVOR.txt; \
    index="${TORCH_INDEX_URL:-}"; \
    pin() { grep -i "^$1==" "$lock"; }; \
    pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: --no-deps \
        ${index:+--index-url "$index"} "$(pin torch)" "$(pin torchvision)"

RUN --mount=type=secret,id=pip-ca \
    set -eu; if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    lock=/usr/local/share/flowtrace/constraints-$FLAVOR.txt; \
    pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -r "$lock"

# The project itself (no dependencies left to resolve), then the recipes where `flowtrace run
# recipes/….py` finds them.
COPY pyproject.toml README.md /tmp/flowtrace-src/
COPY flowtrace /tmp/flowtrace-src/flowtrace
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
        /tmp/flowtrace-src \
    && rm -rf /tmp/flowtrace-src \
    && pip check \
    && flowtrace --help >/dev/null
COPY recipes /work/recipes

ARG VCS_REF=unknown
# Stores record the commit they were made with; the image has no .git to ask.
ENV FLOWTRACE_GIT_COMMIT="${VCS_REF}"
LABEL org.opencontainers.image.title="flowtrace" \
      org.opencontainers.image.description="Map how information flows inside video LLMs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      io.flowtrace.flavor="${FLAVOR}"

USER flowtrace
WORKDIR /work
CMD ["flowtrace", "--help"]
