# shellcheck shell=bash
# Starts and stops the external services of the CI job: a throwaway PostgreSQL 15
# cluster and a single-node Garage (S3) server, each in its own temp dir, bound
# to free ports on 127.0.0.1.
#
# Sourced (by .ci/run, or by hand), it only defines functions:
#
#     source .ci/lib.sh; source .ci/install.sh; source .ci/services.sh
#     strata_ci_services_start      # exports STRATA_TEST_* (see below)
#     ...
#     strata_ci_services_stop
#
# Run as a script, it starts the services, runs one command with the STRATA_TEST_*
# variables set, and stops the services however the command ends:
#
#     bash .ci/services.sh run -- cargo test --workspace
#     bash .ci/services.sh run -- bash          # an interactive shell
#     STRATA_CI_SERVICES=postgres bash .ci/services.sh run -- cargo test -p strata-catalog
#
# Exported after start:
#   STRATA_TEST_POSTGRES_URI            postgres://strata:strata@127.0.0.1:PORT/strata (role has CREATEDB)
#   STRATA_TEST_S3_ENDPOINT             http://127.0.0.1:PORT
#   STRATA_TEST_S3_BUCKET               strata-ci
#   STRATA_TEST_S3_COLD_BUCKET          strata-ci-cold (a second bucket: the cold tier of the tiering tests)
#   STRATA_TEST_S3_ACCESS_KEY_ID        GK... (created per run)
#   STRATA_TEST_S3_SECRET_ACCESS_KEY
#   STRATA_TEST_S3_REGION               garage

if ! declare -F strata_ci_log >/dev/null; then
  # shellcheck source=lib.sh
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
if ! declare -F strata_ci_garage_path >/dev/null; then
  # shellcheck source=install.sh
  source "$(dirname "${BASH_SOURCE[0]}")/install.sh"
fi

STRATA_CI_PG_BIN="${STRATA_CI_PG_BIN:-/usr/lib/postgresql/15/bin}"
# PostgreSQL refuses to run as root, so as root the cluster belongs to this user.
STRATA_CI_PG_OS_USER="${STRATA_CI_PG_OS_USER:-strata-ci}"
STRATA_CI_S3_BUCKET="${STRATA_CI_S3_BUCKET:-strata-ci}"
STRATA_CI_S3_KEY_NAME="${STRATA_CI_S3_KEY_NAME:-strata-ci-key}"
STRATA_CI_S3_REGION="garage"
# Attempts (0.5 s apart) to wait for a service to become ready.
STRATA_CI_READY_ATTEMPTS="${STRATA_CI_READY_ATTEMPTS:-120}"

# ---------------------------------------------------------------- PostgreSQL

# Runs a command as the OS user that owns the cluster (the current user unless root).
strata_ci_pg_as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u "$STRATA_CI_PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

# Runs psql as the cluster superuser over the cluster's unix socket.
strata_ci_pg_superuser_psql() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$STRATA_CI_PG_DIR" -p "$STRATA_CI_PG_PORT" \
    -U postgres -d postgres "$@"
}

# Starts PostgreSQL 15 in a new temp dir, creates role strata/strata with
# CREATEDB and a database strata, and exports STRATA_TEST_POSTGRES_URI.
strata_ci_postgres_start() {
  if [[ -n ${STRATA_CI_PG_DIR:-} ]]; then
    strata_ci_error "postgres: already started in $STRATA_CI_PG_DIR"
    return 1
  fi
  if [[ ! -x $STRATA_CI_PG_BIN/postgres ]]; then
    strata_ci_error "postgres: $STRATA_CI_PG_BIN/postgres not found (apt-get install postgresql-15)"
    return 1
  fi
  if [[ $EUID -eq 0 ]] && ! id -u "$STRATA_CI_PG_OS_USER" >/dev/null 2>&1; then
    strata_ci_log "postgres: creating system user $STRATA_CI_PG_OS_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$STRATA_CI_PG_OS_USER" || return 1
  fi

  STRATA_CI_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/strata-ci-postgres.XXXXXX") || return 1
  STRATA_CI_PG_PORT=$(strata_ci_free_ports 1) || return 1
  if [[ $EUID -eq 0 ]]; then
    chown "$STRATA_CI_PG_OS_USER:" "$STRATA_CI_PG_DIR" || return 1
  fi
  local data_dir="$STRATA_CI_PG_DIR/data"
  strata_ci_log "postgres: initdb in $data_dir"
  if ! strata_ci_pg_as_owner "$STRATA_CI_PG_BIN/initdb" --pgdata="$data_dir" --username=postgres \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale --no-sync \
    >"$STRATA_CI_PG_DIR/initdb.log" 2>&1; then
    strata_ci_error "postgres: initdb failed"
    strata_ci_dump_log "$STRATA_CI_PG_DIR/initdb.log"
    return 1
  fi
  # Durability is pointless for a throwaway cluster; speed is not.
  cat >>"$data_dir/postgresql.conf" <<EOF

# added by .ci/services.sh
listen_addresses = '127.0.0.1'
port = $STRATA_CI_PG_PORT
unix_socket_directories = '$STRATA_CI_PG_DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

  strata_ci_log "postgres: starting on 127.0.0.1:$STRATA_CI_PG_PORT"
  if ! strata_ci_pg_as_owner "$STRATA_CI_PG_BIN/pg_ctl" --pgdata="$data_dir" \
    --log="$STRATA_CI_PG_DIR/postgres.log" --wait --timeout=60 start >/dev/null; then
    strata_ci_error "postgres: pg_ctl start failed"
    strata_ci_dump_log "$STRATA_CI_PG_DIR/postgres.log"
    return 1
  fi
  if ! strata_ci_retry "$STRATA_CI_READY_ATTEMPTS" 0.5 \
    "$STRATA_CI_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$STRATA_CI_PG_PORT" -t 2; then
    strata_ci_error "postgres: not accepting connections on 127.0.0.1:$STRATA_CI_PG_PORT"
    strata_ci_dump_log "$STRATA_CI_PG_DIR/postgres.log"
    return 1
  fi

  strata_ci_pg_superuser_psql \
    -c "CREATE ROLE strata LOGIN PASSWORD 'strata' CREATEDB" \
    -c "CREATE DATABASE strata OWNER strata" || return 1

  export STRATA_TEST_POSTGRES_URI="postgres://strata:strata@127.0.0.1:${STRATA_CI_PG_PORT}/strata"
  # Check the URI the tests will use: TCP, password authentication, CREATEDB.
  local role_can_create_db
  role_can_create_db=$(psql -X -At -v ON_ERROR_STOP=1 "$STRATA_TEST_POSTGRES_URI" \
    -c "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user") || {
    strata_ci_error "postgres: cannot log in as strata over TCP"
    return 1
  }
  if [[ $role_can_create_db != t ]]; then
    strata_ci_error "postgres: role strata lacks CREATEDB"
    return 1
  fi
  strata_ci_log "postgres: ready, $(psql -X -At "$STRATA_TEST_POSTGRES_URI" -c 'SHOW server_version')"
}

# Stops the cluster (fast shutdown) and removes its temp dir.
strata_ci_postgres_stop() {
  if [[ -z ${STRATA_CI_PG_DIR:-} ]]; then
    return 0
  fi
  local data_dir="$STRATA_CI_PG_DIR/data"
  if [[ -f $data_dir/postmaster.pid ]]; then
    strata_ci_log "postgres: stopping"
    if ! strata_ci_pg_as_owner "$STRATA_CI_PG_BIN/pg_ctl" --pgdata="$data_dir" \
      --mode=fast --wait --timeout=30 stop >/dev/null 2>&1; then
      local postmaster_pid
      postmaster_pid=$(head -n 1 "$data_dir/postmaster.pid" 2>/dev/null)
      if [[ $postmaster_pid =~ ^[0-9]+$ ]]; then
        strata_ci_log "postgres: pg_ctl stop failed, killing postmaster $postmaster_pid"
        kill -KILL "$postmaster_pid" 2>/dev/null
      fi
    fi
  fi
  rm -rf -- "$STRATA_CI_PG_DIR"
  unset STRATA_CI_PG_DIR STRATA_CI_PG_PORT STRATA_TEST_POSTGRES_URI
}

# -------------------------------------------------------------------- Garage

# Runs the garage CLI against the running server.
strata_ci_garage_cli() {
  "$STRATA_CI_GARAGE_BIN" -c "$STRATA_CI_GARAGE_DIR/garage.toml" "$@"
}

# Returns 0 while the garage server process is alive.
strata_ci_garage_alive() {
  [[ -n ${STRATA_CI_GARAGE_PID:-} ]] && kill -0 "$STRATA_CI_GARAGE_PID" 2>/dev/null
}

# Returns 0 once the server answers the CLI and reports a healthy cluster.
strata_ci_garage_healthy() {
  strata_ci_garage_alive && strata_ci_garage_cli health -q >/dev/null 2>&1
}

# Returns 0 once the S3 endpoint answers HTTP (any status: anonymous requests get 403).
strata_ci_garage_s3_answers() {
  # python3 rather than curl: a new machine is only promised python3.
  python3 - "http://127.0.0.1:${STRATA_CI_GARAGE_S3_PORT}/" <<'EOF'
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # any HTTP status means the endpoint is up
except OSError:
    sys.exit(1)
EOF
}

# Starts a single-node Garage in a new temp dir, assigns its layout, creates the
# bucket and an access key with read/write/owner on it, and exports STRATA_TEST_S3_*.
strata_ci_garage_start() {
  if [[ -n ${STRATA_CI_GARAGE_DIR:-} ]]; then
    strata_ci_error "garage: already started in $STRATA_CI_GARAGE_DIR"
    return 1
  fi
  STRATA_CI_GARAGE_BIN=$(strata_ci_garage_path) || {
    strata_ci_error "garage: binary not found (cargo install garage --version ${STRATA_CI_GARAGE_VERSION} --locked)"
    return 1
  }
  STRATA_CI_GARAGE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/strata-ci-garage.XXXXXX") || return 1
  local -a ports
  mapfile -t ports < <(strata_ci_free_ports 3)
  if ((${#ports[@]} != 3)); then
    strata_ci_error "garage: could not pick free ports"
    return 1
  fi
  local rpc_port=${ports[0]} admin_port=${ports[2]}
  STRATA_CI_GARAGE_S3_PORT=${ports[1]}
  local config_path="$STRATA_CI_GARAGE_DIR/garage.toml"
  cat >"$config_path" <<EOF
# written by .ci/services.sh
metadata_dir = "$STRATA_CI_GARAGE_DIR/meta"
data_dir = "$STRATA_CI_GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
metadata_fsync = false
data_fsync = false

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(strata_ci_random_hex 32)"

[s3_api]
s3_region = "$STRATA_CI_S3_REGION"
api_bind_addr = "127.0.0.1:$STRATA_CI_GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(strata_ci_random_hex 24)"
EOF
  chmod 600 "$config_path"

  strata_ci_log "garage: starting $("$STRATA_CI_GARAGE_BIN" --version 2>&1 | head -n 1 | cut -d' ' -f1-2), S3 on 127.0.0.1:$STRATA_CI_GARAGE_S3_PORT"
  RUST_LOG="${STRATA_CI_GARAGE_LOG:-garage=info,netapp=warn}" \
    "$STRATA_CI_GARAGE_BIN" -c "$config_path" server \
    >"$STRATA_CI_GARAGE_DIR/garage.log" 2>&1 </dev/null &
  STRATA_CI_GARAGE_PID=$!

  local status_output="" attempt
  for ((attempt = 1; attempt <= STRATA_CI_READY_ATTEMPTS; attempt++)); do
    if ! strata_ci_garage_alive; then
      strata_ci_error "garage: server exited during startup"
      strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/garage.log"
      return 1
    fi
    if status_output=$(strata_ci_garage_cli status 2>/dev/null); then
      break
    fi
    status_output=""
    sleep 0.5
  done
  if [[ -z $status_output ]]; then
    strata_ci_error "garage: \`garage status\` did not answer"
    strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/garage.log"
    return 1
  fi
  # `garage status` prints a table under "==== HEALTHY NODES ====" whose first
  # column is the (16-hex-digit prefix of the) node id.
  local node_id
  node_id=$(awk '/^ID[[:space:]]+Hostname/ { in_table = 1; next } in_table && NF { print $1; exit }' \
    <<<"$status_output")
  if [[ ! $node_id =~ ^[0-9a-f]{16,64}$ ]]; then
    strata_ci_error "garage: cannot find the node id in \`garage status\`:"
    printf '%s\n' "$status_output" >&2
    return 1
  fi
  strata_ci_log "garage: node $node_id, assigning layout"
  if ! strata_ci_garage_cli layout assign -z dc1 -c 1G "$node_id" >>"$STRATA_CI_GARAGE_DIR/cli.log" 2>&1 ||
    ! strata_ci_garage_cli layout apply --version 1 >>"$STRATA_CI_GARAGE_DIR/cli.log" 2>&1; then
    strata_ci_error "garage: layout assign/apply failed"
    strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/cli.log"
    return 1
  fi
  if ! strata_ci_retry "$STRATA_CI_READY_ATTEMPTS" 0.5 strata_ci_garage_healthy; then
    strata_ci_error "garage: cluster not healthy after layout apply"
    strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/garage.log"
    return 1
  fi

  local bucket
  for bucket in "$STRATA_CI_S3_BUCKET" "$STRATA_CI_S3_BUCKET-cold"; do
    strata_ci_garage_cli bucket create "$bucket" >>"$STRATA_CI_GARAGE_DIR/cli.log" 2>&1 || {
      strata_ci_error "garage: bucket create $bucket failed"
      strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/cli.log"
      return 1
    }
  done
  local key_output
  key_output=$(strata_ci_garage_cli key create "$STRATA_CI_S3_KEY_NAME" 2>>"$STRATA_CI_GARAGE_DIR/cli.log") || {
    strata_ci_error "garage: key create failed"
    strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/cli.log"
    return 1
  }
  # Garage 2.x prints an aligned table: `Key ID:      GK...` / `Secret key:  <64 hex>`.
  local access_key_id secret_access_key
  access_key_id=$(awk -F': *' '/^Key ID:/ { print $2; exit }' <<<"$key_output" | tr -d '[:space:]')
  secret_access_key=$(awk -F': *' '/^Secret key:/ { print $2; exit }' <<<"$key_output" | tr -d '[:space:]')
  if [[ ! $access_key_id =~ ^GK[0-9a-f]+$ || ! $secret_access_key =~ ^[0-9a-f]{32,}$ ]]; then
    strata_ci_error "garage: cannot parse the output of \`garage key create\`:"
    grep -v '^Secret key:' <<<"$key_output" >&2
    return 1
  fi
  for bucket in "$STRATA_CI_S3_BUCKET" "$STRATA_CI_S3_BUCKET-cold"; do
    strata_ci_garage_cli bucket allow --read --write --owner "$bucket" \
      --key "$STRATA_CI_S3_KEY_NAME" >>"$STRATA_CI_GARAGE_DIR/cli.log" 2>&1 || {
      strata_ci_error "garage: bucket allow $bucket failed"
      strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/cli.log"
      return 1
    }
  done
  if ! strata_ci_retry "$STRATA_CI_READY_ATTEMPTS" 0.5 strata_ci_garage_s3_answers; then
    strata_ci_error "garage: S3 endpoint 127.0.0.1:$STRATA_CI_GARAGE_S3_PORT does not answer"
    strata_ci_dump_log "$STRATA_CI_GARAGE_DIR/garage.log"
    return 1
  fi

  export STRATA_TEST_S3_ENDPOINT="http://127.0.0.1:${STRATA_CI_GARAGE_S3_PORT}"
  export STRATA_TEST_S3_BUCKET="$STRATA_CI_S3_BUCKET"
  export STRATA_TEST_S3_COLD_BUCKET="$STRATA_CI_S3_BUCKET-cold"
  export STRATA_TEST_S3_ACCESS_KEY_ID="$access_key_id"
  export STRATA_TEST_S3_SECRET_ACCESS_KEY="$secret_access_key"
  export STRATA_TEST_S3_REGION="$STRATA_CI_S3_REGION"
  strata_ci_log "garage: ready, bucket $STRATA_TEST_S3_BUCKET, key $STRATA_TEST_S3_ACCESS_KEY_ID"
}

# Stops the garage server (SIGTERM, then SIGKILL after 15 s) and removes its temp dir.
strata_ci_garage_stop() {
  if [[ -n ${STRATA_CI_GARAGE_PID:-} ]]; then
    if kill -0 "$STRATA_CI_GARAGE_PID" 2>/dev/null; then
      strata_ci_log "garage: stopping"
      kill -TERM "$STRATA_CI_GARAGE_PID" 2>/dev/null
      local attempt
      for ((attempt = 0; attempt < 30; attempt++)); do
        kill -0 "$STRATA_CI_GARAGE_PID" 2>/dev/null || break
        sleep 0.5
      done
      if kill -0 "$STRATA_CI_GARAGE_PID" 2>/dev/null; then
        strata_ci_log "garage: still running, killing"
        kill -KILL "$STRATA_CI_GARAGE_PID" 2>/dev/null
      fi
    fi
    wait "$STRATA_CI_GARAGE_PID" 2>/dev/null
  fi
  if [[ -n ${STRATA_CI_GARAGE_DIR:-} ]]; then
    rm -rf -- "$STRATA_CI_GARAGE_DIR"
  fi
  unset STRATA_CI_GARAGE_PID STRATA_CI_GARAGE_DIR STRATA_CI_GARAGE_S3_PORT \
    STRATA_TEST_S3_ENDPOINT STRATA_TEST_S3_BUCKET STRATA_TEST_S3_COLD_BUCKET \
    STRATA_TEST_S3_ACCESS_KEY_ID STRATA_TEST_S3_SECRET_ACCESS_KEY STRATA_TEST_S3_REGION
  return 0
}

# ------------------------------------------------------------------ together

# Starts the services named in STRATA_CI_SERVICES (default: "postgres garage").
strata_ci_services_start() {
  local service
  for service in ${STRATA_CI_SERVICES:-postgres garage}; do
    case $service in
      postgres) strata_ci_postgres_start || return 1 ;;
      garage) strata_ci_garage_start || return 1 ;;
      *)
        strata_ci_error "unknown service '$service' in STRATA_CI_SERVICES (postgres, garage)"
        return 1
        ;;
    esac
  done
}

# Stops every service that was started; safe to call more than once.
strata_ci_services_stop() {
  strata_ci_garage_stop
  strata_ci_postgres_stop
  return 0
}

# Prints the exported service variables as shell `export` lines.
strata_ci_services_env() {
  local name
  for name in STRATA_TEST_POSTGRES_URI STRATA_TEST_S3_ENDPOINT STRATA_TEST_S3_BUCKET \
    STRATA_TEST_S3_COLD_BUCKET STRATA_TEST_S3_ACCESS_KEY_ID STRATA_TEST_S3_SECRET_ACCESS_KEY \
    STRATA_TEST_S3_REGION; do
    if [[ -n ${!name:-} ]]; then
      printf 'export %s=%q\n' "$name" "${!name}"
    fi
  done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -uo pipefail
  if [[ ${1:-} != run ]]; then
    echo "usage: bash .ci/services.sh run [--] COMMAND [ARG...]" >&2
    echo "       (STRATA_CI_SERVICES=\"postgres garage\" selects the services)" >&2
    exit 2
  fi
  shift
  if [[ ${1:-} == -- ]]; then
    shift
  fi
  if (($# == 0)); then
    echo "services.sh run: no command given" >&2
    exit 2
  fi
  strata_ci_command_pid=""
  # Forwards a signal to the command, then exits through the EXIT trap.
  # shellcheck disable=SC2317  # called from the traps below
  strata_ci_forward_signal() {
    if [[ -n $strata_ci_command_pid ]]; then
      kill "-$1" "$strata_ci_command_pid" 2>/dev/null
    fi
    exit "$2"
  }
  trap strata_ci_services_stop EXIT
  trap 'strata_ci_forward_signal INT 130' INT
  trap 'strata_ci_forward_signal TERM 143' TERM
  strata_ci_services_start || exit 1
  strata_ci_services_env >&2
  # In the background so that a signal interrupts `wait` at once (bash defers traps
  # while a foreground command runs); `<&0` keeps stdin for interactive commands.
  "$@" <&0 &
  strata_ci_command_pid=$!
  wait "$strata_ci_command_pid"
  exit $?
fi
