#!/usr/bin/env bash
# Builds the image from deploy/Dockerfile and checks it end to end, from the repository root:
#
#   bash deploy/image-test.sh                   # base images pulled from the registry
#   bash deploy/image-test.sh --standin-bases   # no registry: bases built here (see below)
#
# The check: the image runs as uid 10001 with its own defaults (every role, SQLite and local
# files under the /var/lib/strata volume); /livez and /readyz answer; dcmtk's echoscu gets
# C-ECHO success; dcmsend stores a CT (explicit VR little endian) and a JPEG-LS MR; QIDO-RS
# finds each by its SOP Instance UID; WADO-RS returns each in its stored transfer syntax with
# the same SOP Instance UID and pixel data (pydicom); `docker stop` drains and the process
# exits 0 within the grace period; the image size is printed.
#
# --standin-bases is for machines without registry access (such as the project's own, where
# Docker Hub does not resolve): `debian:bookworm-slim` is bootstrapped from Debian's archive
# (debootstrap, minbase) and `rust:1.95-bookworm` is that plus a C toolchain and this
# machine's Rust 1.95.0 toolchain under /usr/local/rustup, as in the official image, and the
# machine's extra CA certificates (/usr/local/share/ca-certificates: an egress proxy that
# re-signs TLS must be trusted to download crates). They are tagged with the official names,
# so deploy/Dockerfile is built unchanged.
#
# Needs: docker (20.10 or newer, BuildKit), dcmtk, curl, python3 with pydicom; debootstrap
# and rustup's 1.95.0 toolchain for --standin-bases. The corpus is read from ../shared/corpus
# (STRATA_CORPUS overrides).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
STANDIN=0
[[ ${1:-} == --standin-bases ]] && STANDIN=1
CORPUS=${STRATA_CORPUS:-$REPO_ROOT/../shared/corpus}
IMAGE=strata:image-test
WORK=$(mktemp -d /tmp/strata-image-test.XXXXXX)
CONTAINER=""
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# The images this run replaces (same tags, earlier runs): removed at the end once untagged,
# so that repeated runs (CI) do not pile up gigabytes of old images.
REPLACED_IMAGES=()
cleanup() {
  # -v: the image declares /var/lib/strata a volume; the test's anonymous volume goes too.
  if [[ -n $CONTAINER ]]; then docker rm -f -v "$CONTAINER" >/dev/null 2>&1 || true; fi
  local image
  for image in "${REPLACED_IMAGES[@]}"; do
    if [[ -z $(docker image inspect -f '{{join .RepoTags ","}}' "$image" 2>/dev/null) ]]; then
      docker rmi "$image" >/dev/null 2>&1 || true
    fi
  done
  # BuildKit's cache: the least recently used entries beyond 8 GB go (the cargo registry and
  # target cache mounts, used by every build, stay).
  docker builder prune -f --keep-storage 8GB >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# dcmtk's tools, not pynetdicom's console scripts of the same names. The version text is read
# whole before it is matched: piping it into `grep -q`, which exits at the first match, can kill
# the tool with SIGPIPE while it still writes, and pipefail then turns the match into a failure.
dcmtk() {
  local tool version
  for tool in $(type -ap "$1"); do
    version=$("$tool" --version 2>&1 || true)
    if [[ ${version,,} == *dcmtk* ]]; then echo "$tool"; return; fi
  done
  echo "dcmtk's $1 is not installed (apt-get install dcmtk)" >&2
  exit 1
}
ECHOSCU=$(dcmtk echoscu)
DCMSEND=$(dcmtk dcmsend)

# A docker client that builds with BuildKit (the Dockerfile's cache mounts need it): one with
# the buildx plugin, or a 20.x-22.x client, which has BuildKit built in.
DOCKER=""
for client in $(type -ap docker); do
  if "$client" buildx version >/dev/null 2>&1; then DOCKER=$client; break; fi
  major=$("$client" version -f '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  if [[ $major =~ ^[0-9]+$ ]] && ((major >= 20 && major < 23)); then DOCKER=$client; break; fi
done
[[ -n $DOCKER ]] || { echo "no docker client with BuildKit (install the buildx plugin)" >&2; exit 1; }
docker() { "$DOCKER" "$@"; }

build_standin_bases() {
  local toolchain
  toolchain=$(readlink -f "$(rustup toolchain list -v | awk '/^1\.95\.0-/ {print $NF}')")
  [[ -x $toolchain/bin/rustc ]] || { echo "rustup has no 1.95.0 toolchain" >&2; exit 1; }
  log "bootstrapping debian:bookworm-slim from the Debian archive"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  # As the official slim image: apt keeps no caches, dpkg installs no documentation.
  cat >"$WORK/rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  cat >"$WORK/rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  find "$WORK/rootfs/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$WORK/rootfs/usr/share/man/"* "$WORK/rootfs/usr/share/info/"* \
    "$WORK/rootfs/usr/share/locale/"* "$WORK/rootfs/var/cache/apt/"*.bin \
    "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$WORK/rootfs"
  log "building rust:1.95-bookworm from it and $toolchain"
  mkdir "$WORK/rust"
  cp -a "$toolchain" "$WORK/rust/toolchain"
  rm -rf "$WORK/rust/toolchain/share/doc"
  cp "$(command -v rustup)" "$WORK/rust/rustup"
  # The machine's own extra CAs (a TLS-intercepting egress proxy, as on the project's
  # machine): the builder must trust them to reach crates.io. The runtime image is unchanged.
  mkdir "$WORK/rust/ca"
  find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$WORK/rust/ca/" \; 2>/dev/null || true
  cat >"$WORK/rust/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git gcc g++ make \
       libc6-dev pkg-config perl libssl-dev file xz-utils \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=1.95.0
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain /usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu
COPY rustup /usr/local/cargo/bin/rustup
RUN for tool in cargo rustc rustdoc; do ln -s rustup /usr/local/cargo/bin/$tool; done \
    && printf 'version = "12"\ndefault_toolchain = "1.95.0-x86_64-unknown-linux-gnu"\n' \
       >/usr/local/rustup/settings.toml \
    && cargo --version
EOF
  docker build -q -t rust:1.95-bookworm "$WORK/rust" >/dev/null
  rm -rf "$WORK/rust"
}

for tag in "$IMAGE" debian:bookworm-slim rust:1.95-bookworm; do
  if id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null); then REPLACED_IMAGES+=("$id"); fi
done

((STANDIN)) && build_standin_bases

log "building $IMAGE from deploy/Dockerfile"
start=$(date +%s)
DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; exit 1; }
log "built in $(($(date +%s) - start)) s; image size $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
DIMSE_PORT=$(free_port)
CONTAINER=$(docker run -d -p "127.0.0.1:$HTTP_PORT:8080" -p "127.0.0.1:$DIMSE_PORT:11112" "$IMAGE")
BASE=http://127.0.0.1:$HTTP_PORT
for _ in $(seq 1 100); do
  curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
if ! { curl -fsS "$BASE/livez" >/dev/null && curl -fsS "$BASE/readyz" >/dev/null; }; then
  docker logs "$CONTAINER" | tail -20 >&2
  echo "the container did not become ready" >&2
  exit 1
fi
user=$(docker exec "$CONTAINER" sh -c 'id -u')
[[ $user == 10001 ]] || { echo "runs as uid $user, not 10001" >&2; exit 1; }
log "ready on $BASE and DIMSE port $DIMSE_PORT, running as uid $user"

"$ECHOSCU" -aec STRATA 127.0.0.1 "$DIMSE_PORT"
log "C-ECHO: success"

FILES=("$CORPUS/valid/ct_explicit_le_private_tags.dcm" "$CORPUS/compressed/mr_jpegls_lossless.dcm")
# dcmsend proposes each file's own transfer syntax, so the archive receives it unconverted.
"$DCMSEND" -aec STRATA 127.0.0.1 "$DIMSE_PORT" "${FILES[@]}"
log "C-STORE: ${#FILES[@]} files stored"

python3 - "$BASE" "${FILES[@]}" <<'EOF'
import io, json, sys, urllib.request
import pydicom

base, paths = sys.argv[1], sys.argv[2:]
for path in paths:
    original = pydicom.dcmread(path)
    uid = original.SOPInstanceUID
    with urllib.request.urlopen(f"{base}/dicomweb/instances?SOPInstanceUID={uid}") as response:
        found = json.load(response)
    assert len(found) == 1, f"QIDO-RS found {len(found)} instances for {path}"
    study = found[0]["0020000D"]["Value"][0]
    series = found[0]["0020000E"]["Value"][0]
    url = f"{base}/dicomweb/studies/{study}/series/{series}/instances/{uid}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request) as response:
        content_type = response.headers["Content-Type"]
        body = response.read()
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = [part for part in body.split(b"--" + boundary)[1:] if not part.startswith(b"--")]
    assert len(parts) == 1, f"{len(parts)} parts for {path}"
    payload = parts[0].split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
    retrieved = pydicom.dcmread(io.BytesIO(payload))
    assert retrieved.SOPInstanceUID == uid, path
    assert retrieved.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID, path
    assert retrieved.PixelData == original.PixelData, f"pixel data differs for {path}"
    print(f"QIDO-RS and WADO-RS: {path.rsplit('/', 1)[-1]} back with the same UID and pixel data")
EOF

start=$(date +%s)
docker stop -t 40 "$CONTAINER" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[[ $code == 0 ]] || { docker logs "$CONTAINER" | tail -20 >&2; echo "exit code $code after docker stop" >&2; exit 1; }
log "docker stop: drained and exited 0 in $(($(date +%s) - start)) s"
log "image test passed"
