# Debian packages the image pipeline and scripts/vm need on top of prereqs.sh's. Sourced, not run.
source "$(dirname "${BASH_SOURCE[0]}")/prereqs.sh"

FLOTILLA_IMAGE_APT_PACKAGES=(
  mmdebstrap eatmydata squashfs-tools cryptsetup-bin gdisk dosfstools mtools qemu-utils
  qemu-system-x86 ovmf e2fsprogs systemd openssh-client
)

ensure_image_prereqs() {
  ensure_apt_packages "${FLOTILLA_IMAGE_APT_PACKAGES[@]}"
}
