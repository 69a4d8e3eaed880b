/** Sends single datagrams from the control thread through a UDP socket that the workers also use. */
import { native } from '../native/io.js'
import type { SendDatagram } from './peers/transport-send.js'

const CTRL_SLOT_BYTES = 4096

export class UdpSender {
  private readonly slab = new Uint8Array(new SharedArrayBuffer(CTRL_SLOT_BYTES))
  private readonly lens = new Int32Array(1)
  private readonly addrs = new Uint32Array(2)

  constructor(private readonly fd: number) {}

  readonly send: SendDatagram = (buf, ip, port) => {
    if (buf.length > CTRL_SLOT_BYTES) return
    this.slab.set(buf, 0)
    this.lens[0] = buf.length
    this.addrs[0] = ip >>> 0
    this.addrs[1] = port
    native.sendBatch(this.fd, this.slab, CTRL_SLOT_BYTES, 0, this.lens, this.addrs, 1)
  }
}
