/** One trace line per flow event a worker reports (verbosity 5). */
import { intToIp } from '../../common/ipv4.js'
import type { FlowLog } from '../../ipc/messages.js'
import type { AgentLogger } from '../../log/logger.js'
import type { PeerTable } from '../peers/peer-table.js'

const PROTO_NAMES: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp' }

export function logFlow(log: AgentLogger, f: FlowLog, peers: PeerTable): void {
  const peer = f.peer >= 0 ? (peers.get(f.peer)?.cfg.identity ?? `slot${f.peer}`) : '-'
  const ports = f.proto === 6 || f.proto === 17
  log.trace(
    {
      dir: f.dir === 'out' ? 'outbound' : 'inbound',
      peer,
      proto: PROTO_NAMES[f.proto] ?? String(f.proto),
      src: ports ? `${intToIp(f.src)}:${f.sport}` : intToIp(f.src),
      dst: ports ? `${intToIp(f.dst)}:${f.dport}` : intToIp(f.dst),
      ...(f.proto === 1 ? { icmp_type: f.sport } : {}),
      size: f.len,
      verdict: f.verdict,
    },
    'flow',
  )
}
