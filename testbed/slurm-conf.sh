#!/usr/bin/env bash
# The one source of Slurm's configuration for the testbed (testbed/slurm.sh) and the docker-compose dev
# stack (deploy/compose/slurm/entrypoint.sh): prints one file for a cluster. Pure: reads nothing, writes
# nothing but stdout, so both always agree on the layout (nodes, partitions, ports, plugins).
#   slurm-conf.sh slurm.conf|gres.conf|cgroup.conf VERSION CLUSTER BASE_PORT STATE_DIR [DBD_PORT]
# VERSION      22.05 (munge), 24.11 or 26.05 (auth/slurm; 26.05 also serves OpenMetrics)
# BASE_PORT    slurmctld's port; the slurmd of slurm-bridge-N listen on BASE_PORT+1+N, ns-N on BASE_PORT+10+N
# STATE_DIR    the cluster's directory as its daemons see it: jwt.key, ctld/, spool/%n, run/, log/, gpu/
# DBD_PORT     slurmdbd's port: accounting, fair-share, QOS and preemption on; empty: no accounting
# Nodes: slurm-bridge-[0-3] (2 and 3 with 2 fake GPUs each) in partition slurm-bridge; ns-[0-7] declared
# ahead (State=FUTURE) in partition nodeset.
set -euo pipefail
WHAT="${1:?usage: slurm-conf.sh slurm.conf|gres.conf|cgroup.conf VERSION CLUSTER BASE_PORT STATE_DIR}"
VERSION="${2:?VERSION}" CLUSTER="${3:?CLUSTER}" BASE_PORT="${4:?BASE_PORT}" IN="${5:?STATE_DIR}" DBD_PORT="${6:-}"
FUTURE_NODES=8
PARTITION=slurm-bridge

slurm_conf() {
  local auth="auth/slurm" cred="cred/slurm" p=$((BASE_PORT + 1)) metrics="" accounting
  accounting="AccountingStorageType=accounting_storage/none"
  if [[ -n "$DBD_PORT" ]]; then
    accounting="# Accounting, fair-share, QOS and preemption (docs/slurm-policies.md); the associations are made by
# setup_associations below.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos,safe
PriorityType=priority/multifactor
PriorityWeightFairshare=100000
PriorityWeightQOS=10000
PriorityWeightAge=100
PriorityWeightJobSize=0
PriorityWeightPartition=0
PriorityMaxAge=1-0
# Fair-share factors are recomputed every minute (the smallest period), usage halves in 30 minutes.
PriorityCalcPeriod=1
PriorityDecayHalfLife=30
PreemptType=preempt/qos
PreemptMode=CANCEL"
  fi
  if [[ "$VERSION" == 22.05 ]]; then auth="auth/munge"; cred="cred/munge"; fi
  # Slurm >= 25.11 serves its own OpenMetrics on slurmctld's port (/metrics/jobs, /metrics/nodes, ...);
  # the exporter is compared with it (tests/testbed/test_exporter_native.py) and Prometheus scrapes it.
  if [[ "$VERSION" == 26.05 ]]; then metrics=$'MetricsType=metrics/openmetrics\nMetricsParameters=ignore_private_data'; fi
  cat <<CONF
# Written by testbed/slurm.sh: a $VERSION cluster on loopback for the bridge's tests.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$BASE_PORT
SlurmUser=root
SlurmdUser=root
AuthType=$auth
CredType=$cred
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$IN/jwt.key
StateSaveLocation=$IN/ctld
SlurmdSpoolDir=$IN/spool/%n
SlurmctldPidFile=$IN/run/slurmctld.pid
SlurmdPidFile=$IN/run/slurmd-%n.pid
SlurmctldLogFile=$IN/log/slurmctld.log
SlurmdLogFile=$IN/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Place jobs on the next scheduler pass instead of batching submits for 3 s (TESTBED-FACTS); a backfill
# pass every 5 s (default 30) so a pod that fits a hole starts soon (tests/testbed/test_policies_e2e.py).
SchedulerParameters=batch_sched_delay=0,bf_interval=5
# Nodes are declared bigger than this machine; without this they come up "inval".
SlurmdParameters=config_overrides
ReturnToService=2
# Without it a job with no memory request takes a whole node's memory.
DefMemPerCPU=256
GresTypes=gpu
KillWait=5
MinJobAge=120
SlurmdTimeout=30
InactiveLimit=0
MaxNodeCount=64
$metrics
NodeName=DEFAULT CPUs=4 RealMemory=8192 State=UNKNOWN
NodeName=slurm-bridge-[0-1] NodeHostname=localhost NodeAddr=127.0.0.1 Port=$p-$((p + 1))
NodeName=slurm-bridge-[2-3] NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((p + 2))-$((p + 3)) Gres=gpu:2
NodeName=ns-[0-$((FUTURE_NODES - 1))] NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((BASE_PORT + 10))-$((BASE_PORT + 9 + FUTURE_NODES)) State=FUTURE
PartitionName=$PARTITION Nodes=slurm-bridge-[0-3] Default=YES MaxTime=INFINITE State=UP
PartitionName=nodeset Nodes=ns-[0-$((FUTURE_NODES - 1))] MaxTime=INFINITE State=UP
CONF
}

case "$WHAT" in
  slurm.conf) slurm_conf ;;
  # Fake GPUs: character devices aliasing /dev/null (major 1, minor 3) at $IN/gpu/fake[0-1]; Slurm drops
  # file-less GPUs. Nothing ever opens them.
  gres.conf) printf 'AutoDetect=off\nNodeName=slurm-bridge-[2-3] Name=gpu File=%s/gpu/fake[0-1]\n' "$IN" ;;
  # 24.11+ would try to set up cgroups; 22.05 has no "disabled" plugin and needs no cgroup.conf (empty).
  cgroup.conf) [[ "$VERSION" == 22.05 ]] || printf 'CgroupPlugin=disabled\n' ;;
  *) echo "slurm-conf.sh: unknown file $WHAT" >&2; exit 2 ;;
esac
