#!/usr/bin/env bash
# Benchmarks Strata and Orthanc side by side on this machine, in one command:
#
#   bash benches/run.sh            # full run (about 40 minutes), writes docs/benchmarks.md
#   bash benches/run.sh --smoke    # a few hundred instances, Strata only (what CI runs)
#   bash benches/run.sh --no-large-query --mixed-seconds 0   # skip the long query and memory phases
#   bash benches/run.sh --ingest-only   # STOW-RS, C-STORE and the storescp sink only (about 12 minutes)
#
# Builds Strata in release mode, starts it on embedded defaults and Orthanc (Debian packages
# orthanc + orthanc-dicomweb, installed if missing) on free loopback ports, runs the same
# scenarios against both, alternating, and renders medians, spreads and ratios.
set -euo pipefail

ARGS=$(printf ' %s' "$@")
MODE=full
RUNS=3
NO_LARGE_QUERY=0
INGEST_ONLY=0
MIXED_OVERRIDE=""
OUTPUT=docs/benchmarks.md
while (($#)); do
  case $1 in
    --smoke) MODE=smoke; RUNS=1; OUTPUT=""; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --output) OUTPUT=$2; shift 2 ;;
    --no-large-query) NO_LARGE_QUERY=1; shift ;;
    --ingest-only) INGEST_ONLY=1; shift ;;
    --mixed-seconds) MIXED_OVERRIDE=$2; shift 2 ;;
    *) echo "usage: $0 [--smoke] [--runs N] [--output FILE] [--no-large-query] [--ingest-only] [--mixed-seconds N]" >&2; exit 2 ;;
  esac
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
# The archives run as deployed by default: with RUST_BACKTRACE=1 inherited from a developer's
# shell, every error value dicom-rs creates while parsing (one per data set, at its end)
# captures a backtrace (1.4% of Strata's CPU during C-STORE, measured with perf).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-bench.XXXXXX")
RESULTS="$WORK/results.jsonl"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ $MODE == smoke ]]; then
  INSTANCES=200 STUDIES_SMALL=300 STUDIES_LARGE=0 REPEAT=20 MIXED_SECONDS=20 LIMIT_BYTES=$((256 << 20))
  PROFILE=dev BIN_DIR="$CARGO_TARGET_DIR/debug"
else
  INSTANCES=1000 STUDIES_SMALL=10000 STUDIES_LARGE=100000 REPEAT=200 MIXED_SECONDS=600 LIMIT_BYTES=$((2 << 30))
  PROFILE=release BIN_DIR="$CARGO_TARGET_DIR/release"
fi

((NO_LARGE_QUERY)) && STUDIES_LARGE=0
[[ -n $MIXED_OVERRIDE ]] && MIXED_SECONDS=$MIXED_OVERRIDE

log "building ($PROFILE)"
cargo build --profile "$PROFILE" -p strata-cli -p strata-benches
BENCH="$BIN_DIR/strata-bench"
STRATA="$BIN_DIR/strata"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts an archive; sets TARGET_URL and TARGET_PID.
start_strata() {
  local data_dir="$WORK/strata-$1" log_file="$WORK/strata-$1.log"
  TARGET_DATA=("$data_dir")
  "$STRATA" serve --data-dir "$data_dir" --http-addr 127.0.0.1:0 --dimse-addr 127.0.0.1:0 2>"$log_file" &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  local address=""
  for _ in $(seq 1 300); do
    address=$(grep -o 'http_addr=[0-9.:]*' "$log_file" | head -1 | cut -d= -f2 || true)
    [[ -n $address ]] && break
    sleep 0.2
  done
  [[ -n $address ]] || { cat "$log_file" >&2; return 1; }
  TARGET_URL="http://$address/dicomweb"
  TARGET_DIMSE=""
  for _ in $(seq 1 50); do
    TARGET_DIMSE=$(grep -o 'dimse_addr=[0-9.:]*' "$log_file" | head -1 | cut -d= -f2 || true)
    [[ -n $TARGET_DIMSE ]] && break
    sleep 0.2
  done
  TARGET_AE=STRATA
}

# dcmtk's storescp receiving and discarding (--ignore), forking per association: the
# protocol's limit on this machine. The first storescp on PATH may be pynetdicom's. The
# version text is read whole before it is matched (`grep -q` in a pipe can SIGPIPE the tool,
# which pipefail reports as no match).
dcmtk_storescp() {
  local candidate version
  for candidate in $(type -ap storescp) /usr/bin/storescp; do
    version=$("$candidate" --version 2>&1 || true)
    if [[ ${version,,} == *dcmtk* ]]; then echo "$candidate"; return 0; fi
  done
  return 1
}

start_sink() {
  local port storescp
  storescp=$(dcmtk_storescp) || { log "dcmtk storescp not found"; return 1; }
  port=$(free_port)
  TCP_NODELAY=1 "$storescp" --fork --ignore -aet SINK "$port" >"$WORK/sink-$1.log" 2>&1 &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  sleep 0.5
  TARGET_URL=""
  TARGET_DIMSE="127.0.0.1:$port"
  TARGET_AE=SINK
}

ORTHANC_AVAILABLE=0
ensure_orthanc() {
  if [[ ! -x /usr/sbin/Orthanc || ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]]; then
    if [[ $(id -u) == 0 ]]; then
      log "installing orthanc and orthanc-dicomweb (Debian)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
    fi
  fi
  [[ -x /usr/sbin/Orthanc && -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] && ORTHANC_AVAILABLE=1
  # The Debian package starts a system service on 8042; it is not the one measured here.
  if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
    systemctl stop orthanc || true
  fi
}

start_orthanc() {
  local dir="$WORK/orthanc-$1" http_port dicom_port
  http_port=$(free_port)
  dicom_port=$(free_port)
  mkdir -p "$dir"
  TARGET_DATA=("$dir/storage" "$dir/index")
  # Tuned as a careful user would: no storage compression, no job persistence, metadata
  # precomputed for DICOMweb, and TCP_NODELAY=1 in the environment (Debian's DCMTK leaves
  # Nagle's algorithm on otherwise).
  cat >"$dir/orthanc.json" <<JSON
{
  "Name": "bench", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir/index",
  "HttpPort": $http_port, "DicomPort": $dicom_port, "DicomAet": "ORTHANC",
  "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "HttpCompressionEnabled": false,
  "StorageCompression": false, "SaveJobs": false, "ConcurrentJobs": 2, "HttpThreadsCount": 50,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "Ssl": false,
                "StudiesMetadata": "MainDicomTags", "SeriesMetadata": "Full" }
}
JSON
  TCP_NODELAY=1 /usr/sbin/Orthanc "$dir/orthanc.json" >"$dir/log.txt" 2>&1 &
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$http_port/system" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$http_port/system" >/dev/null || { cat "$dir/log.txt" >&2; return 1; }
  TARGET_URL="http://127.0.0.1:$http_port/dicom-web"
  TARGET_DIMSE="127.0.0.1:$dicom_port"
  TARGET_AE=ORTHANC
}

# Stops the archive and removes its data (logs stay): the 100,000-study archives and the
# mixed load's instances would otherwise fill the disk before the run ends.
stop_target() {
  kill "$TARGET_PID" 2>/dev/null || true
  wait "$TARGET_PID" 2>/dev/null || true
  ((${#TARGET_DATA[@]})) && rm -rf "${TARGET_DATA[@]}"
  TARGET_DATA=()
}
TARGET_DATA=()

bench() {
  local target=$1
  shift
  log "$target: $*"
  "$BENCH" run --target "$target" --dicomweb "$TARGET_URL" --pid "$TARGET_PID" \
    --dimse "$TARGET_DIMSE" --called-ae "$TARGET_AE" "$@" | tee -a "$RESULTS" >&2
}

TARGETS=(strata)
if [[ $MODE == full ]]; then
  ensure_orthanc
  ((ORTHANC_AVAILABLE)) && TARGETS+=(orthanc) || log "Orthanc unavailable: Strata only"
fi

log "machine limits"
"$BENCH" limits --dir "$WORK" --bytes "$LIMIT_BYTES" --repeat "$((REPEAT * 5))" | tee -a "$RESULTS" >&2

# Ingest and retrieval: a fresh archive per run and target, targets alternating.
for run in $(seq 1 "$RUNS"); do
  for target in "${TARGETS[@]}"; do
    "start_$target" "io-$run"
    bench "$target" --scenario stow --concurrency 1 --instances "$INSTANCES" --seed $((run * 10 + 1))
    bench "$target" --scenario stow --concurrency 8 --instances "$INSTANCES" --seed $((run * 10 + 2))
    bench "$target" --scenario cstore --concurrency 1 --instances "$INSTANCES" --seed $((run * 10 + 3))
    bench "$target" --scenario cstore --concurrency 8 --instances "$INSTANCES" --seed $((run * 10 + 4))
    if ((!INGEST_ONLY)); then
      bench "$target" --scenario retrieve --seed $((run * 10 + 1))
      bench "$target" --scenario metadata --instances "$INSTANCES" --repeat 20 --seed $((run * 10 + 1))
      bench "$target" --scenario frame --instances "$INSTANCES" --repeat "$REPEAT" --seed $((run * 10 + 1))
    fi
    stop_target
  done
  if start_sink "io-$run"; then
    bench sink --scenario cstore --concurrency 1 --instances "$INSTANCES" --seed $((run * 10 + 3))
    bench sink --scenario cstore --concurrency 8 --instances "$INSTANCES" --seed $((run * 10 + 4))
    stop_target
  fi
done

# Queries: one archive per target, grown from the small to the large study count.
((INGEST_ONLY)) || for target in "${TARGETS[@]}"; do
  "start_$target" query
  bench "$target" --scenario populate --studies "$STUDIES_SMALL" --concurrency 4
  bench "$target" --scenario qido --studies "$STUDIES_SMALL" --repeat "$REPEAT"
  if ((STUDIES_LARGE > STUDIES_SMALL)); then
    bench "$target" --scenario populate --from $((STUDIES_SMALL + 1)) --studies "$STUDIES_LARGE" --concurrency 4
    bench "$target" --scenario qido --studies "$STUDIES_LARGE" --repeat "$REPEAT"
  fi
  stop_target
done

# Memory under a mixed load.
((MIXED_SECONDS > 0 && !INGEST_ONLY)) && for target in "${TARGETS[@]}"; do
  "start_$target" mixed
  bench "$target" --scenario mixed --duration-secs "$MIXED_SECONDS"
  stop_target
done

TABLE=$("$BENCH" report "$RESULTS")
if [[ -n $OUTPUT ]]; then
  SECTION="$WORK/section.md"
  {
    echo "## Run of $(date -u '+%Y-%m-%d, %H:%M') UTC (\`bash benches/run.sh$ARGS\`)"
    echo
    echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' with local changes')."
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))," \
      "$(free -g | awk '/^Mem:/ { print $2 }') GiB memory, $(uname -sr)."
    echo "Strata release build, embedded defaults (SQLite + local directory);" \
      "Orthanc $(dpkg-query -W -f '${Version}' orthanc 2>/dev/null || echo '?') with DICOMweb plugin" \
      "$(dpkg-query -W -f '${Version}' orthanc-dicomweb 2>/dev/null || echo '?'), SQLite index, TCP_NODELAY=1."
    if ((INGEST_ONLY)); then
      echo "Runs per scenario: $RUNS, alternating between the archives; ingest scenarios only (\`--ingest-only\`)."
    else
      echo "Runs per scenario: $RUNS (query and mixed-load scenarios: 1), alternating between the archives;" \
        "query scale: $STUDIES_SMALL studies$( ((STUDIES_LARGE)) && echo " and $STUDIES_LARGE"); mixed load: $MIXED_SECONDS s."
    fi
    echo
    echo "$TABLE"
  } >"$SECTION"
  # A new run goes on top of the earlier ones (and the hand-written analysis around them)
  # below the marker line; a file without the marker is replaced by the new run alone.
  MARKER='<!-- benches/run.sh inserts new runs below this line -->'
  if [[ -f $OUTPUT ]] && grep -qF -- "$MARKER" "$OUTPUT"; then
    awk -v marker="$MARKER" -v section="$SECTION" '
      { print }
      $0 == marker { print ""; while ((getline line < section) > 0) print line; print "" }
    ' "$OUTPUT" >"$WORK/output.md"
    cp "$WORK/output.md" "$OUTPUT"
  else
    { echo "# Benchmarks"; echo; echo "$MARKER"; echo; cat "$SECTION"; } >"$OUTPUT"
  fi
  log "wrote $OUTPUT"
fi
echo "$TABLE"
