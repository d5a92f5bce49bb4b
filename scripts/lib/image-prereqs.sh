# Debian packages the image pipeline and scripts/vm need. Sourced, not run.

FLOTILLA_IMAGE_APT_PACKAGES=(
  mmdebstrap eatmydata squashfs-tools cryptsetup-bin gdisk dosfstools mtools qemu-utils
  qemu-system-x86 ovmf e2fsprogs systemd openssh-client etcd-server etcd-client
)

ensure_image_prereqs() {
  local missing=() p
  for p in "${FLOTILLA_IMAGE_APT_PACKAGES[@]}"; do
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
