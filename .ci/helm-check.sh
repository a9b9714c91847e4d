#!/usr/bin/env bash
# Lints, renders and schema-validates the Helm chart helm/strata offline: no helm binary,
# no cluster. Installs its two PyPI packages (helm-python-sdk, kubernetes-validate; pinned
# in .ci/install.sh) when they are missing, then runs .ci/helm_check.py, which also
# self-tests by breaking copies of the chart. Usage, from anywhere:
#
#   bash .ci/helm-check.sh [--no-self-test] [-v] [--values FILE ...]
#
# Exit code 0 when everything passes. The last line reads "N passed, N failed".
set -euo pipefail

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CI_DIR/.." && pwd)"

# shellcheck source=lib.sh
source "$CI_DIR/lib.sh"
# shellcheck source=install.sh
source "$CI_DIR/install.sh"

strata_ci_install_helm_check_packages
cd "$REPO_ROOT"
PYTHONDONTWRITEBYTECODE=1 exec python3 "$CI_DIR/helm_check.py" --chart helm/strata "$@"
