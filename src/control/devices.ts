/**
 * The TUN queues and UDP sockets of one run (one of each per data-plane worker), opened together
 * and closed together. The TUN device disappears with its last queue.
 */
import { agentFwmark } from './routes/installer.js'
import { EnclaveError } from '../errors.js'
import { native, openTunQueues, openUdp } from '../native/io.js'
import * as net from '../platform/linux/net.js'
import type { Profile } from './profile/profile.js'

/** Also the routing table number for 0.0.0.0/0; distinct per LocalPort so that agents can coexist. */
export function fwmarkFor(profile: Profile): number {
  return agentFwmark(profile.localPort)
}

export class Devices {
  private constructor(
    readonly ifname: string,
    readonly offload: boolean,
    /** UDP segmentation offload as well (kernel 6.2+): UDP super-datagrams both ways. */
    readonly uso: boolean,
    readonly tunFds: number[],
    readonly udpFds: number[],
    readonly port: number,
  ) {}

  static async open(p: Profile, queues: number): Promise<Devices> {
    // ENCLAVE_TUN_OFFLOAD=0 and ENCLAVE_TUN_USO=0 turn them off (for measuring what they are worth).
    const tun = openTunQueues(p.interface, queues, process.env.ENCLAVE_TUN_OFFLOAD !== '0', process.env.ENCLAVE_TUN_USO !== '0')
    const udp: number[] = []
    const fail = (code: string, msg: string) => {
      for (const fd of [...udp, ...tun.fds]) native.close(fd)
      return new EnclaveError(code, msg)
    }
    try {
      await net.configureInterface(tun.name, p.virtualAddress, p.mtu)
    } catch (e) {
      throw fail('EIFACE', `cannot configure ${tun.name}: ${(e as Error).message}`)
    }
    let port = 0
    try {
      for (let i = 0; i < queues; i++) {
        const fd = openUdp(0, i === 0 ? p.localPort : port, true, fwmarkFor(p))
        if (i === 0) port = native.udpLocalPort(fd)
        udp.push(fd)
      }
    } catch (e) {
      throw fail('EBIND', `${(e as Error).message} (is another agent or WireGuard using it? set LocalPort in the profile)`)
    }
    return new Devices(tun.name, tun.offload, tun.uso, tun.fds, udp, port)
  }

  close(): void {
    for (const fd of [...this.udpFds, ...this.tunFds]) native.close(fd)
    this.udpFds.length = 0
    this.tunFds.length = 0
  }
}
