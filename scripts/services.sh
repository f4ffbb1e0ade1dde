#!/usr/bin/env bash
# Start and stop the real servers the integration tests talk to, all on
# 127.0.0.1, on free ports, with every file (data, config, logs, pids) under DIR:
#
#   PostgreSQL 15   initdb + pg_ctl as user postgres (initdb refuses root)
#   Redis 7         redis-server --daemonize yes, nothing persisted
#   S3              Ceph RADOS Gateway 16.2 over one mon + one memstore OSD,
#                   a real S3 implementation that checks SigV4 and expiry
#
# Usage:
#   scripts/services.sh start DIR        start everything, write DIR/env
#   scripts/services.sh stop DIR         stop everything; never fails
#   scripts/services.sh stop-s3 DIR      stop radosgw only (mon + OSD keep the data)
#   scripts/services.sh start-s3 DIR     start radosgw again on the same port
#   scripts/services.sh stop-redis DIR   stop redis only
#   scripts/services.sh start-redis DIR  start redis again on the same port (empty)
#   scripts/services.sh restart-postgres DIR
#
# DIR/env holds `export` lines (DATABASE_URL, TEST_REDIS_URL, TEST_S3_*, and the
# SERVICES_* ports); `source DIR/env` before running the tests. `stop` removes
# it. Needs root (PostgreSQL runs as user postgres) and
# scripts/install-system-deps.sh. Knobs: SERVICES_WAIT_SECONDS (default 60),
# SERVICES_PYTHON (python with boto3; default .venv/bin/python),
# SERVICES_KEEP_ON_FAILURE=1 (leave daemons up when start fails).
set -euo pipefail

readonly PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
# boto3 creates the bucket; radosgw-admin cannot create one by itself.
readonly VENV_PYTHON=${SERVICES_PYTHON:-$REPO_ROOT/.venv/bin/python}
# Any python3 will do for picking ports and random keys.
if [[ -x /usr/bin/python3 ]]; then SYS_PYTHON=/usr/bin/python3; else SYS_PYTHON=python3; fi
readonly SYS_PYTHON
# How long each service may take to answer before start gives up.
readonly WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-60}
readonly S3_BUCKET=platform-test
readonly S3_USER=test
# radosgw's default zonegroup is called "default"; SigV4 requests and
# presigned URLs signed for this region are accepted (us-east-1 is too).
readonly S3_REGION=default

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# Milliseconds since the epoch, for the timings printed after each step.
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
since() { echo "$(( $(now_ms) - $1 )) ms"; }

# ---------------------------------------------------------------- paths

# Every path derives from DIR so that several DIRs can run side by side.
set_paths() {
  [[ -n "${1:-}" ]] || die "missing DIR argument"
  DIR=$(realpath -m -- "$1")
  ENV_FILE=$DIR/env
  PG_DIR=$DIR/postgres
  PG_DATA=$PG_DIR/data
  PG_SOCK=$PG_DIR/run
  PG_LOG=$PG_DIR/postgres.log
  REDIS_DIR=$DIR/redis
  REDIS_PIDFILE=$REDIS_DIR/redis.pid
  REDIS_LOG=$REDIS_DIR/redis.log
  CEPH_DIR=$DIR/ceph
  CEPH_CONF=$CEPH_DIR/ceph.conf
  CEPH_RUN=$CEPH_DIR/run
  CEPH_LOGS=$CEPH_DIR/log
  MON_PIDFILE=$CEPH_RUN/mon.a.pid
  OSD_PIDFILE=$CEPH_RUN/osd.0.pid
  RGW_PIDFILE=$CEPH_RUN/client.rgw.a.pid
  # Ceph tools read this instead of /etc/ceph/ceph.conf.
  export CEPH_CONF
}

# Ports and keys of a running DIR, for the single-service subcommands.
load_env() {
  [[ -f "$ENV_FILE" ]] || die "$ENV_FILE not found; run: $0 start $DIR"
  # shellcheck source=/dev/null
  source "$ENV_FILE"
}

# ------------------------------------------------------------ processes

# PID from a pid file if that process is alive and runs the expected binary.
# Checking the binary guards against a recycled pid; zombies count as gone.
live_pid() {
  local pidfile=$1 exe=$2 pid
  [[ -s "$pidfile" ]] || return 1
  pid=$(head -n 1 "$pidfile" 2>/dev/null | tr -dc '0-9')
  [[ -n "$pid" ]] || return 1
  pid_runs "$pid" "$exe" || return 1
  echo "$pid"
}

# True if PID is alive (not a zombie) and runs the binary EXE (a name on PATH
# or a path). Compared after resolving symlinks: Debian's redis-server is a
# symlink to redis-check-rdb.
pid_runs() {
  local pid=$1 exe=$2 path want
  path=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  want=$(readlink -f "$(command -v "$exe" || echo "$exe")")
  [[ "$path" == "$want" ]]
}

# Pids this command stopped; see wait_reaped.
STOPPED_PIDS=()

# SIGTERM, wait up to 15 s, then SIGKILL. Never fails.
kill_and_wait() {
  local name=$1 pid=$2 exe=$3 i
  STOPPED_PIDS+=("$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    pid_runs "$pid" "$exe" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_runs "$pid" "$exe" || return 0
    sleep 0.1
  done
  log "warning: $name (pid $pid) still running after SIGKILL"
}

# Daemons are re-parented to PID 1, which reaps exited ones only every second
# or two here; wait (5 s at most) so that a `pgrep` right after a stop finds
# no <defunct> entry. The daemons themselves are gone already.
wait_reaped() {
  local i pid left
  for ((i = 0; i < 50; i++)); do
    left=0
    for pid in "${STOPPED_PIDS[@]}"; do
      [[ -e "/proc/$pid" ]] && left=1
    done
    ((left)) || return 0
    sleep 0.1
  done
  log "note: some stopped daemons are still zombies waiting for PID 1 to reap them"
}

stop_pidfile() {
  local name=$1 pidfile=$2 exe=$3 pid
  if pid=$(live_pid "$pidfile" "$exe"); then
    kill_and_wait "$name" "$pid" "$exe"
  fi
  rm -f "$pidfile"
}

# Ceph daemons started from this DIR, found by the --conf on their command
# line: a safety net for daemons whose pid file is gone. EXE narrows it down
# to one kind of daemon (default: all of them).
ceph_daemons_of_dir() {
  local kind=${1:-} f pid exe
  # One grep over all command lines: -z splits them into arguments and -x
  # wants an argument equal to this DIR's ceph.conf path.
  for f in $(grep -lsaFxz -- "$CEPH_CONF" /proc/[0-9]*/cmdline || true); do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    case "${exe##*/}" in
      ceph-mon | ceph-osd | radosgw)
        [[ -z "$kind" || "${exe##*/}" == "$kind" ]] && echo "$pid" ;;
    esac
  done
  return 0
}

# Poll CMD until it succeeds. On timeout print WHAT, the log tail, and fail.
wait_for() {
  local what=$1 logfile=$2 deadline
  shift 2
  deadline=$(($(now_ms) + WAIT_SECONDS * 1000))
  until "$@" >/dev/null 2>&1; do
    if (($(now_ms) > deadline)); then
      log "$what did not answer within $WAIT_SECONDS s (check: $*)"
      if [[ -f "$logfile" ]]; then
        log "last lines of $logfile:"
        tail -n 40 "$logfile" >&2 || true
      fi
      return 1
    fi
    sleep 0.1
  done
}

# Free TCP ports on loopback, all distinct: the sockets stay bound until
# every port is chosen.
free_ports() {
  "$SYS_PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# N random characters from ALPHABET (letters and digits only: a secret that
# starts with "-" would be read as an option by radosgw-admin).
random_token() {
  "$SYS_PYTHON" -c 'import secrets, sys; print("".join(secrets.choice(sys.argv[2]) for _ in range(int(sys.argv[1]))))' "$1" "$2"
}

port_closed() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ------------------------------------------------------------ postgres

pg_ctl_as_postgres() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"; }

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -d postgres -U postgres; }

start_postgres() {
  local port=$1 t0
  t0=$(now_ms)
  install -d -o postgres -g postgres -m 700 "$PG_DIR" "$PG_SOCK"
  # The postgres user must be able to reach DIR through its parents.
  runuser -u postgres -- test -w "$PG_DIR" ||
    die "user postgres cannot write $PG_DIR; make DIR's parent directories traversable (chmod o+x)"
  # Unix socket paths are limited to 107 bytes.
  ((${#PG_SOCK} + 20 < 108)) || die "DIR path too long for a unix socket: $PG_SOCK"

  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
    { tail -n 20 "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  # Throwaway test data: durability off makes migrations and tests fast.
  cat >>"$PG_DATA/postgresql.conf" <<EOF

# Added by scripts/services.sh (test cluster, loopback only, not durable).
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  pg_ctl_as_postgres -l "$PG_LOG" -w -t "$WAIT_SECONDS" start </dev/null >/dev/null ||
    { tail -n 40 "$PG_LOG" >&2; die "PostgreSQL did not start"; }
  wait_for "PostgreSQL on port $port" "$PG_LOG" pg_ready "$port"
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres platform
  log "postgres ready on 127.0.0.1:$port ($(since "$t0"))"
}

stop_postgres() {
  local pid
  [[ -d "$PG_DATA" ]] || return 0
  if pid=$(live_pid "$PG_DATA/postmaster.pid" "$PG_BIN/postgres"); then
    STOPPED_PIDS+=("$pid")
    pg_ctl_as_postgres -m fast -w -t 20 stop >/dev/null 2>&1 || true
  fi
  # pg_ctl failed or timed out: make sure the postmaster is gone anyway.
  if pid=$(live_pid "$PG_DATA/postmaster.pid" "$PG_BIN/postgres"); then
    kill_and_wait postgres "$pid" "$PG_BIN/postgres"
  fi
}

restart_postgres() {
  local t0
  t0=$(now_ms)
  load_env
  pg_ctl_as_postgres -l "$PG_LOG" -m fast -w -t "$WAIT_SECONDS" restart </dev/null >/dev/null ||
    { tail -n 40 "$PG_LOG" >&2; die "PostgreSQL did not restart"; }
  wait_for "PostgreSQL on port $SERVICES_PG_PORT" "$PG_LOG" pg_ready "$SERVICES_PG_PORT"
  log "postgres restarted on 127.0.0.1:$SERVICES_PG_PORT ($(since "$t0"))"
}

# --------------------------------------------------------------- redis

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }

start_redis() {
  local port=$1 t0
  t0=$(now_ms)
  mkdir -p "$REDIS_DIR"
  if live_pid "$REDIS_PIDFILE" redis-server >/dev/null; then
    die "redis already running in $DIR"
  fi
  # Nothing is persisted: tests get an empty broker on every start.
  # Daemons never inherit the caller's stdio: a caller reading our output
  # through a pipe would otherwise wait for them to exit.
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" --dir "$REDIS_DIR" \
    --save '' --appendonly no </dev/null >>"$REDIS_DIR/redis.out" 2>&1
  wait_for "Redis on port $port" "$REDIS_LOG" redis_ping "$port"
  log "redis ready on 127.0.0.1:$port ($(since "$t0"))"
}

stop_redis() {
  local port pid
  stop_pidfile redis "$REDIS_PIDFILE" redis-server
  # Safety net for a lost pid file: ask the redis on our port for its pid.
  [[ -f "$ENV_FILE" ]] || return 0
  port=$(sed -n 's/^export SERVICES_REDIS_PORT=\([0-9]*\)$/\1/p' "$ENV_FILE")
  [[ -n "$port" ]] || return 0
  pid=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null |
    sed -n 's/^process_id:\([0-9]*\).*/\1/p') || true
  if [[ -n "$pid" ]] && pid_runs "$pid" redis-server; then
    kill_and_wait redis "$pid" redis-server
  fi
}

# ---------------------------------------------------------------- ceph

ceph_cli() { timeout 30 ceph --conf "$CEPH_CONF" --connect-timeout 10 "$@"; }

write_ceph_conf() {
  local fsid=$1 mon_port=$2 rgw_port=$3
  # \$cluster, \$name, \$id are expanded by ceph, per daemon.
  cat >"$CEPH_CONF" <<EOF
# Written by scripts/services.sh: a one-node test cluster on loopback.
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon_port]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
# No cephx between daemons on loopback. With auth none radosgw loops on
# "get_initial_auth_request returned -13" unless clients prefer crc.
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc secure
ms_client_mode = crc secure
# Keep everything under DIR: nothing in /etc/ceph, /var/lib/ceph, /var/log/ceph.
keyring = $CEPH_DIR/keyring
run_dir = $CEPH_RUN
pid_file = $CEPH_RUN/\$name.pid
log_file = $CEPH_LOGS/\$cluster-\$name.log
mon_cluster_log_file = $CEPH_LOGS/\$cluster.log
crash_dir = $CEPH_DIR/crash
log_to_stderr = false
err_to_stderr = false
# Every osdmap change (each pool radosgw creates) otherwise waits for the
# 1 s paxos proposal interval: that was most of radosgw's cold start.
paxos_propose_interval = 0.01
paxos_min_wait = 0.01
mon_warn_on_insecure_global_id_reclaim_allowed = false
# One OSD: pools of size 1, few placement groups, no autoscaler (no mgr).
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
# A nearly full disk must not stop a throwaway test monitor.
mon_data_avail_crit = 1

[mon]
mon_data = $CEPH_DIR/mon/\$cluster-\$id

[osd]
osd_data = $CEPH_DIR/osd/\$cluster-\$id
# Objects live in RAM; the OSD must stay up for the data to survive.
osd_objectstore = memstore
memstore_device_bytes = 2147483648

[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $CEPH_DIR/rgw
# The lifecycle worker sleeps in 5 s steps and holds up SIGTERM by as much;
# tests do not use bucket lifecycle rules.
rgw_enable_lc_threads = false
EOF
}

osd_up() { ceph_cli osd stat --format json | grep -q '"num_up_osds":1'; }

start_mon() {
  local fsid=$1 mon_port=$2
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
    "$CEPH_DIR/monmap" >/dev/null
  # mkfs wants a mon. key even though the daemons authenticate with "none".
  ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. \
    --cap mon 'allow *' >/dev/null
  ceph-mon --conf "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
    --keyring "$CEPH_DIR/keyring"
  ceph-mon --conf "$CEPH_CONF" -i a </dev/null >>"$CEPH_LOGS/ceph-mon.a.out" 2>&1
  wait_for "ceph-mon on port $mon_port" "$CEPH_LOGS/ceph-mon.a.log" ceph_cli mon stat
}

start_osd() {
  local uuid id
  uuid=$("$SYS_PYTHON" -c 'import uuid; print(uuid.uuid4())')
  id=$(ceph_cli osd new "$uuid")
  [[ "$id" == 0 ]] || die "expected OSD id 0, the monitor gave '$id'"
  mkdir -p "$CEPH_DIR/osd/ceph-0"
  ceph-osd --conf "$CEPH_CONF" -i 0 --mkfs --osd-uuid "$uuid" \
    >"$CEPH_LOGS/osd-mkfs.log" 2>&1 ||
    { tail -n 20 "$CEPH_LOGS/osd-mkfs.log" >&2; die "ceph-osd --mkfs failed"; }
  ceph-osd --conf "$CEPH_CONF" -i 0 </dev/null >>"$CEPH_LOGS/ceph-osd.0.out" 2>&1
  wait_for "ceph-osd.0" "$CEPH_LOGS/ceph-osd.0.log" osd_up
}

rgw_answers() {
  [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/")" == 200 ]]
}

start_rgw() {
  local port=$1
  if live_pid "$RGW_PIDFILE" radosgw >/dev/null; then
    die "radosgw already running in $DIR"
  fi
  port_closed "$port" || die "port $port is taken by another process; cannot start radosgw"
  mkdir -p "$CEPH_DIR/rgw"
  radosgw --conf "$CEPH_CONF" -n client.rgw.a </dev/null >>"$CEPH_LOGS/radosgw.out" 2>&1
  wait_for "radosgw on port $port" "$CEPH_LOGS/ceph-client.rgw.a.log" rgw_answers "$port"
}

create_s3_user_and_bucket() {
  local port=$1 access=$2 secret=$3
  timeout 60 radosgw-admin --conf "$CEPH_CONF" user create --uid "$S3_USER" \
    --display-name "$S3_USER" --access-key "$access" --secret-key "$secret" >/dev/null
  [[ -x "$VENV_PYTHON" ]] || die "$VENV_PYTHON not found (needs boto3); set SERVICES_PYTHON"
  "$VENV_PYTHON" - "http://127.0.0.1:$port" "$access" "$secret" "$S3_REGION" "$S3_BUCKET" <<'EOF'
import sys
import boto3
endpoint, access, secret, region, bucket = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                  aws_secret_access_key=secret, region_name=region)
s3.create_bucket(Bucket=bucket)
s3.head_bucket(Bucket=bucket)
EOF
}

start_ceph() {
  local mon_port=$1 rgw_port=$2 access=$3 secret=$4 fsid t0
  t0=$(now_ms)
  mkdir -p "$CEPH_DIR" "$CEPH_RUN" "$CEPH_LOGS" "$CEPH_DIR/mon" "$CEPH_DIR/crash"
  # Admin sockets are unix sockets too (107 bytes at most).
  ((${#CEPH_RUN} + 30 < 108)) || die "DIR path too long for ceph admin sockets: $CEPH_RUN"
  fsid=$("$SYS_PYTHON" -c 'import uuid; print(uuid.uuid4())')
  write_ceph_conf "$fsid" "$mon_port" "$rgw_port"
  start_mon "$fsid" "$mon_port"
  log "ceph-mon ready on 127.0.0.1:$mon_port ($(since "$t0"))"
  start_osd
  log "ceph-osd ready ($(since "$t0"))"
  start_rgw "$rgw_port"
  log "radosgw answers on 127.0.0.1:$rgw_port ($(since "$t0"))"
  create_s3_user_and_bucket "$rgw_port" "$access" "$secret"
  log "s3 user '$S3_USER' and bucket '$S3_BUCKET' ready ($(since "$t0"))"
}

# Stop one kind of ceph daemon: the one in its pid file, then any other
# started with this DIR's ceph.conf.
stop_ceph_daemon() {
  local exe=$1 pidfile=$2 pid
  stop_pidfile "$exe" "$pidfile" "$exe"
  for pid in $(ceph_daemons_of_dir "$exe"); do
    kill_and_wait "$exe" "$pid" "$exe"
  done
}

stop_ceph() {
  # Clients before servers: radosgw, then the OSD, the monitor last (an OSD
  # whose monitor is gone takes long to shut down).
  stop_ceph_daemon radosgw "$RGW_PIDFILE"
  stop_ceph_daemon ceph-osd "$OSD_PIDFILE"
  stop_ceph_daemon ceph-mon "$MON_PIDFILE"
}

# ------------------------------------------------------------ commands

running_services() {
  live_pid "$PG_DATA/postmaster.pid" "$PG_BIN/postgres" >/dev/null && echo postgres
  live_pid "$REDIS_PIDFILE" redis-server >/dev/null && echo redis
  [[ -n "$(ceph_daemons_of_dir)" ]] && echo ceph
  return 0
}

write_env() {
  local pg=$1 redis=$2 mon=$3 rgw=$4 access=$5 secret=$6
  {
    echo "# Written by scripts/services.sh start; source it before the tests."
    printf 'export DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$pg/platform"
    printf 'export TEST_REDIS_URL=%q\n' "redis://127.0.0.1:$redis/0"
    printf 'export TEST_S3_ENDPOINT_URL=%q\n' "http://127.0.0.1:$rgw"
    printf 'export TEST_S3_ACCESS_KEY_ID=%q\n' "$access"
    printf 'export TEST_S3_SECRET_ACCESS_KEY=%q\n' "$secret"
    printf 'export TEST_S3_REGION=%q\n' "$S3_REGION"
    printf 'export TEST_S3_BUCKET=%q\n' "$S3_BUCKET"
    printf 'export SERVICES_DIR=%q\n' "$DIR"
    printf 'export SERVICES_PG_PORT=%q\n' "$pg"
    printf 'export SERVICES_REDIS_PORT=%q\n' "$redis"
    printf 'export SERVICES_CEPH_MON_PORT=%q\n' "$mon"
    printf 'export SERVICES_RGW_PORT=%q\n' "$rgw"
    printf 'export SERVICES_CEPH_CONF=%q\n' "$CEPH_CONF"
  } >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# On a failed start, stop whatever did start so that no daemon is left behind
# (set SERVICES_KEEP_ON_FAILURE=1 to keep them for debugging).
on_start_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  if [[ "${SERVICES_KEEP_ON_FAILURE:-0}" == 1 ]]; then
    log "start failed (exit $rc); daemons kept for debugging: $0 stop $DIR"
  else
    log "start failed (exit $rc); stopping what was started (logs kept under $DIR)"
    cmd_stop >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

cmd_start() {
  local running t0 ports pg redis mon rgw access secret
  t0=$(now_ms)
  [[ $EUID -eq 0 ]] || die "must run as root (PostgreSQL runs as user postgres)"
  running=$(running_services | tr '\n' ' ')
  [[ -z "$running" ]] || die "services already running in $DIR: ${running% }; run: $0 stop $DIR"

  # A fresh start every time: old data, pids and env from a dead run go.
  mkdir -p "$DIR"
  rm -rf "$PG_DIR" "$REDIS_DIR" "$CEPH_DIR" "$ENV_FILE"
  # postgres must traverse DIR (mktemp -d makes it 0700); add o+x only when
  # missing so that a DIR like /tmp keeps its mode.
  runuser -u postgres -- test -x "$DIR" || chmod o+x "$DIR"
  trap on_start_exit EXIT

  ports=$(free_ports 4)
  read -r pg redis mon rgw <<<"$ports"
  access=$(random_token 20 ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)
  secret=$(random_token 40 ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789)

  start_postgres "$pg"
  start_redis "$redis"
  start_ceph "$mon" "$rgw" "$access" "$secret"
  write_env "$pg" "$redis" "$mon" "$rgw" "$access" "$secret"
  trap - EXIT
  log "all services ready in $(since "$t0"); source $ENV_FILE"
}

cmd_stop() {
  local t0
  t0=$(now_ms)
  stop_ceph
  stop_redis
  stop_postgres
  wait_reaped
  # A stale env would point the tests at dead ports.
  rm -f "$ENV_FILE"
  log "stopped everything in $DIR ($(since "$t0"))"
}

cmd_start_s3() {
  local t0
  t0=$(now_ms)
  load_env
  # radosgw keeps its users and buckets in the cluster; it needs both up.
  live_pid "$MON_PIDFILE" ceph-mon >/dev/null || die "ceph-mon is not running in $DIR; run: $0 start $DIR"
  live_pid "$OSD_PIDFILE" ceph-osd >/dev/null || die "ceph-osd is not running in $DIR; run: $0 start $DIR"
  start_rgw "$SERVICES_RGW_PORT"
  log "radosgw answers on 127.0.0.1:$SERVICES_RGW_PORT ($(since "$t0"))"
}

cmd_stop_s3() {
  local t0
  t0=$(now_ms)
  stop_ceph_daemon radosgw "$RGW_PIDFILE"
  wait_reaped
  log "radosgw stopped ($(since "$t0"))"
}

cmd_start_redis() {
  load_env
  start_redis "$SERVICES_REDIS_PORT"
}

cmd_stop_redis() {
  local t0
  t0=$(now_ms)
  stop_redis
  wait_reaped
  log "redis stopped ($(since "$t0"))"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd=${1:-}
  [[ $# -eq 2 ]] || usage
  set_paths "$2"
  case "$cmd" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    start-s3) cmd_start_s3 ;;
    stop-s3) cmd_stop_s3 ;;
    start-redis) cmd_start_redis ;;
    stop-redis) cmd_stop_redis ;;
    restart-postgres) restart_postgres ;;
    *) usage ;;
  esac
}

main "$@"
