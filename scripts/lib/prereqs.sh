# Installs what scripts/up and scripts/test need on a fresh Debian 12 machine, as root.
# Sourced, not run. Idempotent and quiet when everything is already there.

# fdisk (sfdisk) and gdisk (sgdisk): the updater's integration test writes a GPT disk image.
# openssl: the cluster PKI (scripts/pki, the harness) issues certificates with it.
FLOTILLA_APT_PACKAGES=(
  systemd-container etcd-server etcd-client iproute2 dnsutils busybox-static
  util-linux ca-certificates curl fdisk gdisk openssl
)

ensure_apt_packages() {
  local missing=()
  local p
  for p in "${FLOTILLA_APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing Debian packages (${missing[*]}); run as root so they can be installed" >&2
    return 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_node_modules() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "error: Node.js 20+ and npm are required (node not found on PATH)" >&2
    return 1
  fi
  # npm ci again when package-lock.json changed since the last install.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "installing npm dependencies (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
  fi
}

ensure_bundle() {
  node scripts/build.mjs
}
