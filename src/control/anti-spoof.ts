/**
 * Anti-spoofing at ingress on every node: overlay sources arriving outside our TUN,
 * and packets for our virtual address arriving outside it, are dropped before the kernel answers them
 * (see net.antiSpoofRuleArgs for the rules and why). Installed at start once the TUN exists, removed
 * at stop; a crashed run's rules are removed by the next start or by `enclave stop` (same tag as NAT).
 * Returns the warnings that status shows.
 */
import { antiSpoofCommand, antiSpoofRuleArgs } from '../platform/linux/net.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import type { AgentLogger } from './logger.js'

export async function installAntiSpoof(
  tun: string,
  selfAddr: string,
  tag: string,
  log: AgentLogger,
  net: OsNetwork = linuxNetwork,
): Promise<string[]> {
  const want = antiSpoofRuleArgs(tun, selfAddr, tag)
  if ((await net.rawPreroutingRules()) === undefined) {
    const w =
      'iptables is not available, so LAN hosts can forge overlay sources at this node: run ' +
      want.map((a) => `\`${antiSpoofCommand(a)}\``).join(' and ')
    log.warn(w)
    return [w]
  }
  const stale = await net.removeTaggedRawRules(tag)
  if (stale) log.warn({ rules: stale }, 'removed anti-spoofing rules left by an earlier run that did not stop cleanly')
  const warnings: string[] = []
  for (let i = 0; i < want.length; i++) {
    try {
      await net.insertRawRule(want[i])
    } catch (e) {
      // Without the rpfilter match (xt_rpfilter), the overlay rule falls back to "any non-local source".
      const fallback = i === 0 ? antiSpoofRuleArgs(tun, selfAddr, tag, false)[0] : undefined
      try {
        if (!fallback) throw e
        await net.insertRawRule(fallback)
        log.warn(
          { err: (e as Error).message },
          'anti-spoofing: no rpfilter match; overlay sources outside the TUN are dropped whatever the route',
        )
      } catch (e2) {
        const w = `anti-spoofing: could not add \`${antiSpoofCommand(want[i])}\`: ${(e2 as Error).message}`
        log.warn(w)
        warnings.push(w)
      }
    }
  }
  if (!warnings.length) log.info({ tun }, 'anti-spoofing: dropping overlay sources and packets for our address that arrive outside the TUN')
  return warnings
}

export async function removeAntiSpoof(tag: string, log: AgentLogger, net: OsNetwork = linuxNetwork): Promise<void> {
  const n = await net.removeTaggedRawRules(tag)
  if (n) log.info({ rules: n }, 'anti-spoofing: removed our raw PREROUTING rules')
}
