# The bridge's container image: every `slurm-bridge` subcommand (run, scheduler, controller, exporter, ...).
# Legacy builder (no BuildKit needed):  docker build --network host -t slurm-k8s-bridge:dev .
# The base is pinned by a build arg; pin a digest at a site (BASE_IMAGE=debian:bookworm-slim@sha256:...).
ARG BASE_IMAGE=debian:bookworm-slim

# --- build: a wheel of the project, then a virtualenv with it and its dependencies ---------------------
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# pip trusts the system CA store (which may carry a site's proxy CA), not only its own bundle.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/slurm-bridge && /opt/slurm-bridge/bin/pip install -q --upgrade pip wheel
WORKDIR /src
# Dependencies first (their layer survives source edits): pyproject.toml alone pins them.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/slurm-bridge/bin/pip install -q -r /tmp/requirements.txt
# the packages pyproject.toml names (.dockerignore keeps tests, docs and the testbed out)
COPY . ./
RUN /opt/slurm-bridge/bin/pip wheel -q --no-deps -w /wheels . \
 && /opt/slurm-bridge/bin/pip install -q --no-deps /wheels/*.whl \
 && /opt/slurm-bridge/bin/pip uninstall -q -y pip wheel setuptools \
 && python3 -m compileall -q /opt/slurm-bridge/lib
# (bytecode stays: with a read-only root file system nothing could be cached at start)

# --- final: the interpreter and the virtualenv; no compilers, no pip -------------------------------------
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slurm-bridge
COPY --from=build /opt/slurm-bridge /opt/slurm-bridge
ENV PATH=/opt/slurm-bridge/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["slurm-bridge"]
CMD ["--help"]
LABEL org.opencontainers.image.title="slurm-k8s-bridge" \
      org.opencontainers.image.description="Let Slurm schedule Kubernetes workloads" \
      org.opencontainers.image.licenses="Apache-2.0"
