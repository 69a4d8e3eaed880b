/**
 * Exit-node checks at start and reload: IP forwarding and the SNAT rules for ProvidesRoutes
 * (added and removed by us with ManageNat, otherwise only checked). Returns the warnings that
 * status shows; it logs what it changes.
 */
import { intToIp } from '../common/ipv4.js'
import { natCovers, natRuleArgs } from '../platform/linux/net.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import type { AgentLogger } from './logger.js'
import type { Profile } from './profile/profile.js'

export function natTag(profile: Profile): string {
  return `enclave:${profile.interface}`
}

export async function checkExitNode(profile: Profile, log: AgentLogger, net: OsNetwork = linuxNetwork): Promise<string[]> {
  const en = profile.exitNode
  const warnings: string[] = []
  if (!en.providesRoutes.length) return warnings
  if (en.manageNat) {
    if (!net.ipForwardEnabled()) {
      net.enableIpForward()
      log.info('ManageNat: enabled net.ipv4.ip_forward')
    }
    if ((await net.natRules()) === undefined) {
      warnings.push('ManageNat needs iptables (iptables-nft works) and it is not installed: add the SNAT rules by hand (nft or iptables)')
    } else {
      await net.removeTaggedNatRules(natTag(profile))
      for (const c of en.providesRoutes) {
        const to = en.snatAddress !== undefined ? intToIp(en.snatAddress) : await net.lanAddressFor(c)
        if (!to) {
          warnings.push(`ManageNat: no local address reaches ${c.text}; no SNAT rule added`)
          continue
        }
        try {
          await net.addNatRule(natRuleArgs(c, to, natTag(profile)))
          log.info({ route: c.text, to }, 'ManageNat: added SNAT rule')
        } catch (e) {
          warnings.push(`ManageNat: could not add the SNAT rule for ${c.text}: ${(e as Error).message}`)
        }
      }
    }
  }
  if (!net.ipForwardEnabled()) warnings.push('IP forwarding is off, so nothing reaches the LAN: run `sudo sysctl -w net.ipv4.ip_forward=1`')
  const rules = await net.natRules()
  for (const c of en.providesRoutes) {
    if (rules === undefined) {
      warnings.push('iptables is not available: cannot check the SNAT rules')
      break
    }
    if (!natCovers(rules, c)) {
      const to = (await net.lanAddressFor(c)) ?? "<this node's LAN address>"
      warnings.push(
        `no SNAT rule for ${c.text}: run \`sudo iptables -t nat -A POSTROUTING -s 100.64.0.0/10 -d ${c.text} -j SNAT --to ${to}\``,
      )
    }
  }
  for (const w of warnings) log.warn(w)
  return warnings
}
