/**
 * `enclave doctor`: the exit-node guide's troubleshooting checklist, run on this machine.
 * Each check gives pass, warn or fail, what was seen, and the fix.
 */
import { NAT_WORDS } from '../views/status-format.js'
import { loadProfile, profilePath } from '../config/profile.js'
import { callAgent } from '../api/client.js'
import type { StatusModel } from '../views/status-model.js'
import { OsFootprint } from './os-footprint.js'
import { run } from '../platform/linux/exec.js'
import { intToIp, parseCidr, parseIpv4, type Cidr } from '../common/ipv4.js'
import { EnclaveError, ProfileError } from '../errors.js'
import { compilePolicies, policyModeLine, policyWarnings } from '../compile/policy.js'
import { peersNoPolicyNames } from '../config/edit.js'

export interface Check {
  name: string
  result: 'pass' | 'warn' | 'fail'
  detail: string
  fix?: string
  hint?: string
}

export async function runDoctor(configDir: string, probe?: string): Promise<Check[]> {
  // The probe goes to ping(8) as an argument: accept a dotted IPv4 address and nothing else.
  if (probe !== undefined) {
    const ip = parseIpv4(probe)
    if (typeof ip === 'string') throw new EnclaveError('EUSAGE', `--probe: ${ip}`, 2)
    probe = intToIp(ip)
  }
  const checks: Check[] = []
  const add = (c: Check) => checks.push(c)
  let profile: ReturnType<typeof loadProfile> | undefined
  try {
    profile = loadProfile(profilePath(configDir))
    add({ name: 'profile', result: 'pass', detail: `${profile.file} is valid (identity ${profile.identity})` })
  } catch (e) {
    const missing = e instanceof ProfileError && e.problems.some((p) => /no profile here/.test(p.reason))
    add({
      name: 'profile',
      result: 'fail',
      detail: (e as Error).message,
      fix: missing
        ? 'create one with `sudo enclave init`'
        : 'correct the profile at the path and field named above, then `sudo enclave reload`',
    })
    return checks
  }
  if (profile.unknownKeys.length)
    add({
      name: 'profile keys',
      result: 'warn',
      detail: `keys this version does not know (kept, ignored): ${profile.unknownKeys.join(', ')}`,
      fix: 'check their spelling against the README; remove them if they are not notes of your own',
    })
  for (const c of policyChecks(profile)) add(c)
  let status: StatusModel | undefined
  try {
    status = await callAgent<StatusModel>({ op: 'status' })
    add({ name: 'agent', result: 'pass', detail: `running (pid ${status.pid}), listening on ${status.bindingAddress}` })
  } catch (e) {
    add({ name: 'agent', result: 'fail', detail: (e as Error).message, fix: 'sudo enclave start (or sudo enclave run -v 5 to watch it)' })
  }
  if (status?.hub) for (const c of hubChecks(status.hub)) add(c)
  if (status) {
    for (const p of status.peers) {
      const isExit = p.exitNodeFor.length > 0
      if (p.state === 'Up')
        add({
          name: `peer ${p.identity}`,
          result: 'pass',
          detail: `up, endpoint ${p.endpoint}, last handshake ${p.lastHandshakeSecondsAgo?.toFixed(0)} s ago`,
        })
      else
        add({
          name: `peer ${p.identity}`,
          result: isExit ? 'fail' : 'warn',
          detail: `${p.state}${p.endpoint ? `, endpoint ${p.endpoint}` : ', no endpoint known'}`,
          fix: p.endpoint
            ? `check that UDP ${p.endpoint} is reachable and that the peer lists this system's public key; \`enclave waitfor ${p.identity}\` starts a handshake`
            : `set Endpoint for ${p.identity} in the profile, or let the peer connect first`,
        })
      for (const r of p.exitNodeFor) {
        const c = parseCidr(r.route) as Cidr
        const line = (
          await run('ip', c.len === 0 ? ['route', 'show', 'table', 'all', 'default', 'dev', status.interface] : ['route', 'show', r.route])
        ).stdout.trim()
        if (r.installed && line.includes(status.interface))
          add({
            name: `route ${r.route} via ${p.identity}`,
            result: r.active ? 'pass' : 'warn',
            detail: `${line.split('\n')[0]}${r.active ? '' : ` (standby: ${r.reason})`}`,
          })
        else
          add({
            name: `route ${r.route} via ${p.identity}`,
            result: 'fail',
            detail: r.reason ?? `not in the routing table (ip route show ${r.route}: ${line || 'nothing'})`,
            fix: r.reason?.includes('ForceRoutes')
              ? 'use a more specific route than your LAN, or set "ExitNode": {"ForceRoutes": true}'
              : 'sudo enclave reload',
          })
      }
    }
  }
  // Anti-spoofing, IP forwarding and SNAT: the same checks the agent runs (os-footprint.ts).
  const tun = status?.interface ?? profile.interface
  const provides = profile.exitNode.providesRoutes
  for (const c of await new OsFootprint(profile).check(tun, status !== undefined)) add(c)
  if (provides.length) {
    if (probe) {
      const r = await run('ping', ['-c', '1', '-W', '2', probe])
      const rtt = /time=([\d.]+ ms)/.exec(r.stdout)?.[1]
      add(
        r.code === 0
          ? { name: `LAN probe ${probe}`, result: 'pass', detail: `answers (${rtt})` }
          : {
              name: `LAN probe ${probe}`,
              result: 'fail',
              detail: 'no answer to ICMP echo from the exit node itself',
              fix: `check this node's LAN interface and routes (ip route get ${probe}); the host's firewall may also drop ping`,
            },
      )
    }
    if (status)
      add({
        name: 'unsolicited',
        result: 'pass',
        detail: `${status.exitNode.unsolicitedDrops} packets from the LAN dropped because no peer started their flow`,
      })
  }
  return checks
}

export function formatChecks(checks: Check[]): string {
  const tag = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' }
  const lines: string[] = []
  for (const c of checks) {
    lines.push(`${tag[c.result]}  ${c.name}: ${c.detail}`)
    if (c.fix && c.result !== 'pass') lines.push(`      fix: ${c.fix}${c.hint ? ` (${c.hint})` : ''}`)
  }
  const fails = checks.filter((c) => c.result === 'fail').length
  const warns = checks.filter((c) => c.result === 'warn').length
  lines.push(
    '',
    fails ? `${fails} check(s) failed, ${warns} warning(s)` : warns ? `all checks passed, ${warns} warning(s)` : 'all checks passed',
  )
  return lines.join('\n')
}

/** Tags and Policies: the mode, tags nobody carries, provided routes no policy grants. */
function policyChecks(p: ReturnType<typeof loadProfile>): Check[] {
  const input = {
    selfTags: p.tags,
    selfAddress: p.virtualAddress,
    providesRoutes: p.exitNode.providesRoutes,
    peers: p.peers.map((peer, slot) => ({ slot, tags: peer.tags })),
    policies: p.policies,
  }
  const untagged: Check[] = peersNoPolicyNames(p).map((peer) => ({
    name: `peer ${peer.identity} tags`,
    result: 'fail' as const,
    detail: `Policies exist and ${peer.identity}${peer.description ? ` (${peer.description})` : ''} carries no tag any policy names: all its traffic is dropped`,
    fix: `sudo enclave peer set ${peer.identity} --tag <tag>   (tags the policies name: ${[...new Set((p.policies ?? []).flatMap((x) => [...x.senderTags, ...x.receiverTags]))].join(', ')})`,
  }))
  const warnings = policyWarnings(input)
  if (!warnings.length) return [{ name: 'policies', result: 'pass', detail: policyModeLine(compilePolicies(input)) }, ...untagged]
  return [
    ...untagged,
    ...warnings.map((w) => ({
      name: 'policies',
      result: 'warn' as const,
      detail: w,
      fix: w.includes('ProvidesRoutes')
        ? 'add a policy with GatewayRoutes (or GatewayAllowedIpRanges) for it, naming a tag this system carries in ReceiverTags'
        : 'correct the tag, or add it to Tags of this system or of the peers that should carry it',
    })),
  ]
}

/** What the running agent says of its hub: connected, approved, and what it did not accept. */
export function hubChecks(h: NonNullable<StatusModel['hub']>): Check[] {
  const out: Check[] = []
  if (h.state === 'up')
    out.push({ name: 'hub', result: 'pass', detail: `connected to ${h.url}${h.rev !== undefined ? `, revision ${h.rev}` : ''}` })
  else
    out.push({
      name: 'hub',
      result: h.state === 'refused' ? 'fail' : 'warn',
      detail: `${h.state} (${h.url})${h.error ? `: ${h.error}` : ''}${h.mapAgeS !== undefined ? `; running on the cached map, ${h.mapAgeS} s old` : ''}`,
      fix:
        h.state === 'refused'
          ? 'ask the hub admin (enclave hub system list); to leave the hub: sudo enclave unenrol'
          : `check that ${h.url} is reachable from here (TCP) and that \`enclave hub serve\` runs`,
    })
  if (h.systemState === 'pending')
    out.push({
      name: 'hub approval',
      result: 'warn',
      detail: 'this system awaits approval on the hub: no peers until then',
      fix: 'enclave hub system approve <identity> (on the hub host)',
    })
  for (const n of h.notAccepted) out.push({ name: 'hub offer', result: 'warn', detail: `offered by the hub, not accepted locally: ${n}` })
  if (h.nat)
    out.push({
      name: 'NAT',
      result: h.nat === 'blocked' || h.nat === 'unknown' ? 'warn' : 'pass',
      detail: `${NAT_WORDS[h.nat] ?? h.nat}${h.reflexive ? `; the hub sees this system at ${h.reflexive}` : ''}`,
      ...(h.nat === 'blocked'
        ? { fix: "allow UDP from this system's WireGuard port to the hub's reflect ports (its TCP port and the next)" }
        : {}),
    })
  return out
}
