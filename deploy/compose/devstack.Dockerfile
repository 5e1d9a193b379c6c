# The docker-compose dev stack's tool image: Slurm 22.05 (Debian bookworm: slurmctld, slurmd, slurmrestd
# with the JWT plugin, munge) and what the Kubernetes services need around the binaries the testbed builds
# (openssl for certificates, curl for readiness). Every role is one command of devstack.sh.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin munge openssl curl ca-certificates util-linux \
 && rm -rf /var/lib/apt/lists/* \
 # a name of its own: the host's testbed looks for its munged with `pgrep -x munged`
 && cp /usr/sbin/munged /usr/local/sbin/munged-devstack
