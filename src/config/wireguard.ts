/**
 * `enclave export wireguard`: a wg-quick configuration for a stock WireGuard peer (a phone, a router,
 * wireguard-go), so that it joins this system over the same protocol. The peer's address is the
 * virtual address this profile gives it; its AllowedIPs are this system's virtual address and the
 * routes this system provides as an exit node.
 */
import { EnclaveError } from '../errors.js'
import { decodeKey, publicKeyFromPrivate } from './keys.js'
import { intToIp } from '../common/ipv4.js'
import { findPeer, usageError } from './edit.js'
import type { Profile } from './profile.js'
import { endpointProblem } from './schema.js'

export interface ExportOptions {
  /** How the peer reaches this system, host:port (this profile cannot know its public address). */
  endpoint?: string
  /** The peer's own private key (base64), when the caller has it; otherwise a placeholder line. */
  peerPrivateKey?: string
  keepalive?: number
}

export interface WireguardExport {
  identity: string
  config: string
  /** The config lacks the peer's private key or this system's endpoint. */
  incomplete: string[]
}

export function wireguardConfig(profile: Profile, who: string, o: ExportOptions = {}): WireguardExport {
  const peer = findPeer(profile, who)
  if (o.endpoint !== undefined) {
    const why = endpointProblem(o.endpoint)
    if (why) throw usageError('--endpoint', why)
  }
  const incomplete: string[] = []
  let privateLine: string
  if (o.peerPrivateKey !== undefined) {
    const sk = decodeKey(o.peerPrivateKey.trim())
    if (typeof sk === 'string') throw usageError('--private-key-file', `the key ${sk}`)
    if (!publicKeyFromPrivate(sk).equals(peer.publicKey))
      throw new EnclaveError('EKEY', `--private-key-file: that private key does not belong to peer ${peer.identity}`, 2)
    privateLine = `PrivateKey = ${o.peerPrivateKey.trim()}`
  } else {
    privateLine = `PrivateKey = <the private key of ${peer.identity}: the device's own key, whose public key is ${peer.publicKeyBase64}>`
    incomplete.push('PrivateKey')
  }
  const allowed = [`${intToIp(profile.virtualAddress)}/32`, ...profile.exitNode.providesRoutes.map((c) => c.text)]
  const lines = [
    `# WireGuard configuration for enclave peer ${peer.identity}${peer.description ? ` (${peer.description})` : ''}`,
    `# It connects to ${profile.identity}; made by \`enclave export wireguard\`.`,
    '[Interface]',
    privateLine,
    `Address = ${intToIp(peer.virtualAddress)}/32`,
    '',
    '[Peer]',
    `# ${profile.identity}`,
    `PublicKey = ${profile.publicKey.toString('base64')}`,
  ]
  if (peer.presharedKey) lines.push(`PresharedKey = ${peer.presharedKey.toString('base64')}`)
  lines.push(`AllowedIPs = ${allowed.join(', ')}`)
  if (o.endpoint) lines.push(`Endpoint = ${o.endpoint}`)
  else {
    lines.push(`# Endpoint = <this system's public address>:${profile.localPort}`)
    incomplete.push('Endpoint')
  }
  lines.push(`PersistentKeepalive = ${o.keepalive ?? 25}`)
  return { identity: peer.identity, config: `${lines.join('\n')}\n`, incomplete }
}
