/**
 * The TUN queues and UDP sockets of one run (one of each per data-plane worker), opened together and
 * closed together, behind one interface so that the agent does not know which it has:
 *  - `openNativeDevices`: a multi-queue TUN device and SO_REUSEPORT UDP sockets (the addon);
 *  - `memoryDevices(port)`: queues on a MemoryNet (src/io/memory-net.ts), for agents in one process.
 * The TUN device disappears with its last queue.
 */
import fs from 'node:fs'
import { agentFwmark } from '../ops/route-installer.js'
import { EnclaveError } from '../errors.js'
import type { WorkerIo } from '../io/packet-io.js'
import type { MemoryNet, MemoryPort } from '../io/memory-net.js'
import type { OsNetwork } from '../platform/os-network.js'
import type { Profile } from '../config/profile.js'
import type { SendDatagram } from './peers/transport-send.js'

/** Also the routing table number for 0.0.0.0/0; distinct per LocalPort so that agents can coexist. */
export function fwmarkFor(profile: Profile): number {
  return agentFwmark(profile.localPort)
}

export interface DeviceSet {
  readonly ifname: string
  readonly offload: boolean
  /** UDP segmentation offload as well (kernel 6.2+): UDP super-datagrams both ways. */
  readonly uso: boolean
  readonly port: number
  /** What worker i reads and writes. */
  workerIo(i: number): WorkerIo
  /** Control's sends (handshakes, keepalives, staged packets), through the first worker's socket. */
  readonly send: SendDatagram
  close(): void
}

export interface DeviceOptions {
  /** TUN offloads (TSO4/CSUM; USO on top): on unless turned off (to measure what they are worth). */
  offload: boolean
  uso: boolean
}

export type OpenDevices = (p: Profile, queues: number, os: OsNetwork, opts: DeviceOptions) => Promise<DeviceSet>

export const openNativeDevices: OpenDevices = async (p, queues, os, opts) => {
  const { native, openTunQueues, openUdp } = await import('../native/io.js')
  const { UdpSender } = await import('./udp-sender.js')
  // A multi-queue TUN can be joined and a SO_REUSEPORT port shared: an agent of another run directory (or
  // WireGuard) on the same interface or port would take part of our packets and our iptables tag. Refuse.
  if (fs.existsSync(`/sys/class/net/${p.interface}`))
    throw new EnclaveError(
      'EBUSY',
      `interface ${p.interface} already exists: another agent (with another run directory?) or another program uses it; set Interface in the profile`,
    )
  if (p.localPort !== 0) {
    const probe = native.udpOpen(0, p.localPort, false, 0, 0, 0, false)
    if (probe < 0)
      throw new EnclaveError(
        'EBIND',
        `cannot bind UDP port ${p.localPort}: ${native.strerror(-probe)} (is another agent or WireGuard using it? set LocalPort in the profile)`,
      )
    native.close(probe)
  }
  const tun = openTunQueues(p.interface, queues, opts.offload, opts.uso)
  const udp: number[] = []
  const closeAll = () => {
    for (const fd of [...udp, ...tun.fds]) native.close(fd)
    udp.length = 0
    tun.fds.length = 0
  }
  try {
    await os.configureInterface(tun.name, p.virtualAddress, p.mtu)
  } catch (e) {
    closeAll()
    throw new EnclaveError('EIFACE', `cannot configure ${tun.name}: ${(e as Error).message}`)
  }
  let port = 0
  try {
    for (let i = 0; i < queues; i++) {
      const fd = openUdp(0, i === 0 ? p.localPort : port, true, fwmarkFor(p))
      if (i === 0) port = native.udpLocalPort(fd)
      udp.push(fd)
    }
  } catch (e) {
    closeAll()
    throw new EnclaveError('EBIND', `${(e as Error).message} (is another agent or WireGuard using it? set LocalPort in the profile)`)
  }
  const tunFds = [...tun.fds]
  const udpFds = [...udp]
  return {
    ifname: tun.name,
    offload: tun.offload,
    uso: tun.uso,
    port,
    workerIo: (i) => ({ kind: 'native', tunFd: tunFds[i], udpFd: udpFds[i] }),
    send: new UdpSender(udpFds[0]).send,
    close: closeAll,
  }
}

/**
 * Devices on a memory network at `ip` (the port is the profile's LocalPort, 51820 when it is 0). The
 * interface is "configured" through the OsNetwork, so a MemoryOsNetwork records it and refuses a second one.
 */
export function memoryDevices(net: MemoryNet, ip: number): OpenDevices & { port?: MemoryPort } {
  const open: OpenDevices & { port?: MemoryPort } = async (p, queues, os) => {
    const udpPort = p.localPort || 51820
    await os.configureInterface(p.interface, p.virtualAddress, p.mtu).catch((e: Error) => {
      throw new EnclaveError('EIFACE', `cannot configure ${p.interface}: ${e.message}`)
    })
    let port: MemoryPort
    try {
      port = net.attach(ip, udpPort, p.mtu, queues)
    } catch (e) {
      ;(os as { removeInterface?: (dev: string) => void }).removeInterface?.(p.interface) // as closing a TUN would
      throw new EnclaveError('EBIND', `${(e as Error).message} (is another agent using it? set LocalPort in the profile)`)
    }
    open.port = port
    return {
      ifname: p.interface,
      offload: false,
      uso: false,
      port: udpPort,
      workerIo: (i) => ({ kind: 'memory', ...port.queues[i] }),
      send: port.send,
      close: () => {
        net.detach(port)
        ;(os as { removeInterface?: (dev: string) => void }).removeInterface?.(p.interface)
      },
    }
  }
  return open
}
