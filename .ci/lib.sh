# shellcheck shell=bash
# Logging and step helpers shared by .ci/run, .ci/install.sh and .ci/services.sh.
#
# Sourcing this file only defines functions; it never changes shell options.
# Functions report failure through their return code instead of relying on
# `set -e`, because bash ignores `set -e` inside a function called from an
# `||` or `if` context, which is exactly how the step runner calls them.

# Prints a message to stderr, prefixed with the current UTC time.
strata_ci_log() {
  printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

# Prints an error message to stderr.
strata_ci_error() {
  printf '[%s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

# Formats a number of seconds as `1m05s`.
strata_ci_format_duration() {
  local total_seconds=$1
  printf '%dm%02ds' $((total_seconds / 60)) $((total_seconds % 60))
}

# Prints the last lines of a log file to stderr, framed, if the file exists.
strata_ci_dump_log() {
  local log_path=$1 num_lines=${2:-80}
  if [[ -f $log_path ]]; then
    printf -- '----- last %s lines of %s -----\n' "$num_lines" "$log_path" >&2
    tail -n "$num_lines" "$log_path" >&2
    printf -- '----- end of %s -----\n' "$log_path" >&2
  fi
}

# Runs a command up to NUM_ATTEMPTS times, sleeping DELAY seconds between tries.
# Usage: strata_ci_retry NUM_ATTEMPTS DELAY COMMAND...
strata_ci_retry() {
  local num_attempts=$1 delay=$2
  shift 2
  local attempt
  for ((attempt = 1; attempt <= num_attempts; attempt++)); do
    if "$@"; then
      return 0
    fi
    if ((attempt < num_attempts)); then
      sleep "$delay"
    fi
  done
  return 1
}

# Prints NUM distinct free TCP ports on 127.0.0.1, one per line. All sockets
# are held open until every port is chosen, so the ports are distinct.
strata_ci_free_ports() {
  local num_ports=${1:-1}
  python3 - "$num_ports" <<'EOF'
import socket
import sys

sockets = []
for _ in range(int(sys.argv[1])):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sockets.append(sock)
for sock in sockets:
    print(sock.getsockname()[1])
for sock in sockets:
    sock.close()
EOF
}

# Prints N random bytes as lowercase hex.
strata_ci_random_hex() {
  local num_bytes=$1
  od -An -tx1 -N"$num_bytes" /dev/urandom | tr -d ' \n'
}
