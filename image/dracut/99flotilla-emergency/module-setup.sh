#!/bin/bash
# rd.emergency=reboot alone left the initrd in emergency mode for minutes when /usr never
# appeared: make both emergency paths of the initrd reboot, so boot counting falls back to the
# other slot.

check() { return 0; }
depends() { echo systemd; }
install() {
  # Overwrites the (empty) unit dracut's systemd module installed; inst_simple skips existing files.
  cp "$moddir/emergency.service" "$initdir$systemdsystemunitdir/emergency.service"
  inst_simple "$moddir/dracut-emergency-reboot.conf" "$systemdsystemunitdir/dracut-emergency.service.d/flotilla-reboot.conf"
}
