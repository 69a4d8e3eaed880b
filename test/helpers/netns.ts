/**
 * The netns tests' view of the lab (src/lab/lab.ts): the same Lab, with the names the tests use.
 * Root-only files skip with tap's real skip and the reason from rootSkipReason().
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { type NodeInfo, type NodeSpec, AgentProc, BIN, Lab as BaseLab, peerEntry, ROOT } from '../../src/lab/lab.js'

export type { ExecOut } from '../../src/lab/lab.js'
export { AgentProc, BIN, peerEntry, ROOT }
export type AgentInfo = NodeInfo
export type AgentSpec = NodeSpec

export function rootSkipReason(): string | false {
  if (process.platform !== 'linux') return 'Linux only'
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, TUN devices): run the suite with sudo'
  if (!fs.existsSync('/dev/net/tun')) return 'no /dev/net/tun on this machine'
  return false
}

export function haveCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** A lab whose agents run with the test hooks (`enclave debug ...`) enabled. */
export class Lab extends BaseLab {
  constructor(tag: string) {
    super(tag, { kind: 'enct' })
  }

  makeAgent(spec: AgentSpec): AgentInfo {
    return this.makeNode(spec)
  }

  writeAgentProfile(info: AgentInfo, extra: Record<string, unknown>): void {
    this.writeProfile(info, extra)
  }

  override startAgent(info: AgentInfo, args: string[] = ['-v', '3'], env: Record<string, string> = {}): AgentProc {
    return super.startAgent(info, args, { ENCLAVE_TEST_HOOKS: '1', ...env })
  }
}

export function statusJson(lab: BaseLab, info: AgentInfo): Promise<any> {
  return lab.statusJson(info)
}

export function pingArgs(dst: string, count = 3): string[] {
  return ['-c', String(count), '-i', '0.2', '-W', '2', dst]
}

/** Makes a bridge inside `ns` and returns a function that plugs a new veth from another namespace into it. */
export async function bridge(lab: BaseLab, ns: string, name: string, addr?: string) {
  await lab.sh('ip', ['-n', ns, 'link', 'add', name, 'type', 'bridge'])
  if (addr) await lab.sh('ip', ['-n', ns, 'addr', 'add', addr, 'dev', name])
  await lab.sh('ip', ['-n', ns, 'link', 'set', name, 'up'])
  let n = 0
  return async (other: string, ifname: string, otherAddr: string) => {
    const port = `${name}p${n++}`
    await lab.link(other, ifname, otherAddr, ns, port, '')
    await lab.sh('ip', ['-n', ns, 'link', 'set', port, 'master', name])
  }
}

/** A tiny UDP echo server that answers with the address it saw (to check SNAT from the LAN side). */
export const UDP_WHOAMI = `
const d = require('node:dgram').createSocket('udp4');
d.on('message', (m, r) => d.send(r.address, r.port, r.address));
d.bind(Number(process.argv[1]));`

export const UDP_ASK = `
const d = require('node:dgram').createSocket('udp4');
const t = setTimeout(() => { console.log('timeout'); process.exit(1) }, 3000);
d.on('message', (m) => { console.log(m.toString()); clearTimeout(t); d.close() });
d.send('who am i', Number(process.argv[2]), process.argv[1]);`
