import type { Duplex } from "node:stream";
import dbus from "dbus-next";

const SYSTEMD = "org.freedesktop.systemd1";
const SYSTEMD_PATH = "/org/freedesktop/systemd1";
const MANAGER = "org.freedesktop.systemd1.Manager";

/**
 * A short-lived connection to a machine's system bus from the host. Every call has a timeout: a
 * reply never arrives when the machine goes away mid-call.
 */
export class MachineBus {
  private readonly bus: dbus.MessageBus;

  private constructor(bus: dbus.MessageBus) {
    this.bus = bus;
  }

  static connect(address: string, timeoutMs = 5000): Promise<MachineBus> {
    return new Promise((resolve, reject) => {
      const bus = dbus.sessionBus({ busAddress: address });
      const fail = (err: unknown) => {
        clearTimeout(timer);
        destroy(bus);
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      const timer = setTimeout(() => fail(new Error(`D-Bus connect to ${address} timed out`)), timeoutMs);
      bus.once("error", fail);
      bus.once("connect", () => {
        clearTimeout(timer);
        bus.off("error", fail);
        // Errors after connecting (the machine powering off) surface as failed calls instead.
        bus.on("error", () => {});
        resolve(new MachineBus(bus));
      });
    });
  }

  async call(
    iface: string,
    member: string,
    signature = "",
    body: unknown[] = [],
    timeoutMs = 5000,
  ): Promise<unknown[]> {
    const msg = new dbus.Message({
      destination: SYSTEMD,
      path: SYSTEMD_PATH,
      interface: iface,
      member,
      signature,
      body,
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`D-Bus ${member} timed out`)), timeoutMs);
    });
    try {
      const reply = await Promise.race([this.bus.call(msg), timeout]);
      return reply?.body ?? [];
    } finally {
      clearTimeout(timer);
    }
  }

  async systemState(): Promise<string> {
    const [variant] = await this.call("org.freedesktop.DBus.Properties", "Get", "ss", [
      MANAGER,
      "SystemState",
    ]);
    return String((variant as dbus.Variant).value);
  }

  /**
   * A clean power-off, as `systemctl poweroff` does it: units are stopped in order. (Manager.PowerOff
   * is the forced variant: it skips stopping units, so the agent would never see its SIGTERM.)
   */
  async powerOff(): Promise<void> {
    await this.call(MANAGER, "StartUnit", "ss", ["poweroff.target", "replace-irreversibly"]);
  }

  close(): void {
    destroy(this.bus);
  }
}

// disconnect() only half-closes the socket, which keeps Node's event loop (and so the process) alive.
function destroy(bus: dbus.MessageBus): void {
  (bus as unknown as { _connection: { stream: Duplex } })._connection.stream.destroy();
}
