# The CityBrain platform image: API, inference gateway and metering (`citybrain serve`).
#
#   docker build -t citybrain:latest .          # anywhere with a registry: python:3.11-slim-bookworm,
#                                               # torch's CPU build from PyTorch's own index
#   make image                                  # images/build.sh: picks the base, the tool, the wheels
#
# Build arguments:
#   BASE             the base image: python:3.11-slim-bookworm, or any Debian bookworm (a
#                    debootstrapped one where no registry is reachable), which then gets Debian's
#                    python3.11
#   EXTRAS           extras of the citybrain distribution, comma-separated ("city-models": the
#                    packages that build and serve the city's own hotline models)
#   TORCH_INDEX_URL  an extra pip index holding torch==2.13.0+cpu (empty: only PyPI and
#                    PIP_FIND_LINKS; PyPI's own torch 2.13.0 for Linux is the CUDA build)
#   PIP_FIND_LINKS   a wheel folder pip also looks in (images/build.sh mounts one with --volume)
#   APT_OPTIONS      extra apt-get options (a snapshot mirror needs Check-Valid-Until=false)
#
# The image runs as uid 10001 and writes only to /var/lib/citybrain (its data directory: mount a
# volume there) and /tmp, so it runs with a read-only root filesystem.

ARG BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- python: what every stage shares
FROM ${BASE} AS python
ARG APT_OPTIONS=""
USER root
# python:3.11-slim has Python under /usr/local; a bare Debian bookworm gets Debian's 3.11. Either
# way the virtualenv below links to the interpreter of this stage, which the runtime stage shares.
RUN set -eux; \
    missing=""; \
    command -v python3.11 >/dev/null 2>&1 || missing="python3.11 python3.11-venv"; \
    [ -f /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"; \
    if [ -n "$missing" ]; then \
      apt-get $APT_OPTIONS update; \
      DEBIAN_FRONTEND=noninteractive apt-get $APT_OPTIONS install -y --no-install-recommends $missing; \
      rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi; \
    groupadd --system --gid 10001 citybrain; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/citybrain --no-create-home \
      --shell /usr/sbin/nologin citybrain

# ---------------------------------------------------------------- deps: the virtualenv's packages
FROM python AS deps
# Extra CA certificates of the build machine (a TLS-inspecting proxy), for pip in the build
# stages only: the runtime stage starts again from `python` and never holds them.
COPY images/ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN python3.11 -m venv /opt/citybrain
ARG EXTRAS=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
COPY pyproject.toml /src/pyproject.toml
COPY images/requirements.py /src/images/requirements.py
# One resolution for everything, torch pinned in it (torch==2.13.0 in pyproject.toml): a package
# that depends on torch loosely must not pull another (CUDA) build. Only pyproject.toml is copied
# so far, so this layer is reused until the dependencies change.
RUN set -eux; \
    /opt/citybrain/bin/python /src/images/requirements.py /src/pyproject.toml "$EXTRAS" \
      > /src/requirements.txt; \
    /opt/citybrain/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      -r /src/requirements.txt; \
    /opt/citybrain/bin/pip show torch | grep -q '^Version: 2\.13\.0+cpu$' \
      || { echo "torch is not the 2.13.0 CPU build"; exit 1; }

# ---------------------------------------------------------------- wheel: the platform's own code
FROM deps AS wheel
COPY README.md /src/README.md
COPY marketplace /src/marketplace
COPY model_store /src/model_store
COPY billing /src/billing
RUN /opt/citybrain/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------- runtime: the released image
FROM python AS runtime
COPY --from=deps /opt/citybrain /opt/citybrain
COPY --from=wheel /wheels /tmp/wheels
RUN set -eux; \
    /opt/citybrain/bin/pip install --no-deps --no-index --no-cache-dir /tmp/wheels/*.whl; \
    rm -rf /tmp/wheels; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/citybrain; \
    /opt/citybrain/bin/citybrain --help >/dev/null
ENV PATH=/opt/citybrain/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    CITYBRAIN_HOST=0.0.0.0 \
    CITYBRAIN_DATA_DIR=/var/lib/citybrain
USER 10001:10001
WORKDIR /var/lib/citybrain
EXPOSE 8000
ENTRYPOINT ["citybrain"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
