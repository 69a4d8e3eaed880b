/**
 * systemd's readiness protocol (sd_notify(3)): a datagram to $NOTIFY_SOCKET. The unit is Type=notify, so
 * `systemctl start enclave` returns once the data plane is up and the control socket answers, and a start
 * that fails is reported as failed instead of "active" for a moment. Without NOTIFY_SOCKET, nothing happens.
 */
import { native } from '../native/io.js'

/** Sends `state` (e.g. "READY=1\nSTATUS=…"); true when systemd got it. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const sock = env.NOTIFY_SOCKET
  if (!sock) return false
  return native.unixDgramSend(sock, state) >= 0
}
