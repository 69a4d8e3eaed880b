/**
 * Everything the agent adds to the OS outside its TUN device, in one place: the tag that marks its iptables
 * rules, the anti-spoofing rules (raw PREROUTING), the reply-only rule of an exit node (mangle FORWARD), the
 * SNAT rules and IP forwarding of ManageNat, and the clean-up after a run that died. Routes and policy rules belong to the OsRouteInstaller (routes/), which
 * this file calls for the clean-up. `check()` is the one set of exit-node and anti-spoofing checks: the
 * agent's status warnings and `enclave doctor` both show its results, in the same words. The guide's SNAT
 * command is built here and nowhere else.
 *
 * Anti-spoofing (see net.antiSpoofRuleArgs for the rules and why): overlay sources arriving outside our TUN,
 * and packets for our virtual address arriving outside it, are dropped before the kernel answers them.
 *
 * Reply-only before NAT (see net.replyOnlyForwardArgs): on a node that provides routes, a connection the
 * kernel would forward into the TUN is dropped at its first packet, so a LAN NAT rule that also rewrites
 * packets into the TUN (checked below and named in the warning) cannot dress a LAN host up as this node.
 */
import { intToIp } from '../common/ipv4.js'
import {
  antiSpoofCommand,
  antiSpoofRuleArgs,
  hasAntiSpoofRule,
  hasReplyOnlyForwardRule,
  natCovers,
  natRewritesLanToSelf,
  natRuleArgs,
  replyOnlyForwardArgs,
  replyOnlyForwardCommand,
} from '../platform/linux/net.js'
import { type OsNetwork, linuxNetwork } from '../platform/os-network.js'
import type { AgentLogger } from '../log/logger.js'
import type { Profile } from '../config/profile.js'
import { agentFwmark, removeCrashLeftovers } from './route-installer.js'

/** The comment on every iptables rule an agent adds (`enclave:<interface>`): it removes exactly these. */
export function footprintTag(profile: Pick<Profile, 'interface'>): string {
  return `enclave:${profile.interface}`
}

/** The guide's SNAT rule as iptables arguments: overlay sources to `to`, for the CIDR `dst` or out of `out`. */
export function guideSnatArgs(to: string, where: { dst: string } | { out: string }): string[] {
  const match = 'dst' in where ? ['-d', where.dst] : ['-o', where.out]
  return ['-t', 'nat', '-A', 'POSTROUTING', '-s', '100.64.0.0/10', ...match, '-j', 'SNAT', '--to', to]
}

/** The guide's SNAT rule as the command an admin runs. */
export function guideSnatCommand(to: string, where: { dst: string } | { out: string }): string {
  return `sudo iptables ${guideSnatArgs(to, where).join(' ')}`
}

export const IP_FORWARD_COMMAND = 'sudo sysctl -w net.ipv4.ip_forward=1'

export interface FootprintCheck {
  name: string
  result: 'pass' | 'warn' | 'fail'
  detail: string
  /** The command that fixes it. */
  fix?: string
  /** More about the fix (making it permanent, the alternative). */
  hint?: string
}

export class OsFootprint {
  constructor(
    private profile: Profile,
    private readonly os: OsNetwork = linuxNetwork,
    private readonly log?: AgentLogger,
  ) {}

  get tag(): string {
    return footprintTag(this.profile)
  }

  /** ManageNat turned IP forwarding on (it was off): stop turns it off again. */
  private enabledForward = false

  /** The profile changed (a reload); the interface, and so the tag, cannot change without a restart. */
  setProfile(p: Profile): void {
    this.profile = p
  }

  // ---------------------------------------------------------------- anti-spoofing

  /** Installs the anti-spoofing rules for `tun` (replacing a crashed run's); returns warnings for status. */
  async installAntiSpoof(tun: string): Promise<string[]> {
    const selfAddr = intToIp(this.profile.virtualAddress)
    const want = antiSpoofRuleArgs(tun, selfAddr, this.tag)
    if ((await this.os.rawPreroutingRules()) === undefined) {
      const w =
        'iptables is not available, so LAN hosts can forge overlay sources at this node: run ' +
        want.map((a) => `\`${antiSpoofCommand(a)}\``).join(' and ')
      this.log?.warn(w)
      return [w]
    }
    const stale = await this.os.removeTaggedRawRules(this.tag)
    if (stale) this.log?.warn({ rules: stale }, 'removed anti-spoofing rules left by an earlier run that did not stop cleanly')
    const warnings: string[] = []
    for (let i = 0; i < want.length; i++) {
      try {
        await this.os.insertRawRule(want[i])
      } catch (e) {
        // Without the rpfilter match (xt_rpfilter), the overlay rule falls back to "any non-local source".
        const fallback = i === 0 ? antiSpoofRuleArgs(tun, selfAddr, this.tag, false)[0] : undefined
        try {
          if (!fallback) throw e
          await this.os.insertRawRule(fallback)
          this.log?.warn(
            { err: (e as Error).message },
            'anti-spoofing: no rpfilter match; overlay sources outside the TUN are dropped whatever the route',
          )
        } catch (e2) {
          const w = `anti-spoofing: could not add \`${antiSpoofCommand(want[i])}\`: ${(e2 as Error).message}`
          this.log?.warn(w)
          warnings.push(w)
        }
      }
    }
    if (!warnings.length)
      this.log?.info({ tun }, 'anti-spoofing: dropping overlay sources and packets for our address that arrive outside the TUN')
    return warnings
  }

  async removeAntiSpoof(): Promise<number> {
    const n = await this.os.removeTaggedRawRules(this.tag)
    if (n) this.log?.info({ rules: n }, 'anti-spoofing: removed our raw PREROUTING rules')
    return n
  }

  // ---------------------------------------------------------------- reply-only (FORWARD)

  /**
   * On a node that provides routes, the reply-only rule for `tun` (replacing a crashed run's); on one that
   * provides none (any more, after a reload), none. Returns warnings for status.
   */
  async applyReplyOnly(tun: string): Promise<string[]> {
    const want = replyOnlyForwardArgs(tun, this.tag)
    const rules = await this.os.mangleForwardRules()
    if (!this.profile.exitNode.providesRoutes.length) {
      if (rules?.length && (await this.os.removeTaggedMangleForwardRules(this.tag)))
        this.log?.info('reply-only: this node provides no routes; removed its FORWARD rule')
      return []
    }
    if (rules === undefined) {
      const w = `iptables is not available, so a LAN NAT rule can let LAN hosts start connections into the overlay: run \`${replyOnlyForwardCommand(want)}\``
      this.log?.warn(w)
      return [w]
    }
    if (hasReplyOnlyForwardRule(rules, tun, this.tag)) return []
    await this.os.removeTaggedMangleForwardRules(this.tag)
    try {
      await this.os.insertMangleForwardRule(want)
    } catch (e) {
      const w = `reply-only: could not add \`${replyOnlyForwardCommand(want)}\`: ${(e as Error).message}`
      this.log?.warn(w)
      return [w]
    }
    this.log?.info({ tun }, 'reply-only: dropping connections forwarded into the TUN (mangle FORWARD), before any NAT')
    return []
  }

  /** Removes the reply-only rule (at stop). */
  async removeReplyOnly(): Promise<number> {
    const n = await this.os.removeTaggedMangleForwardRules(this.tag)
    if (n) this.log?.info({ rules: n }, 'reply-only: removed our FORWARD rule')
    return n
  }

  // ---------------------------------------------------------------- ManageNat

  /** SNAT rules a crashed earlier run left (call only while holding the run directory's lock). */
  async removeStaleNat(): Promise<number> {
    const n = await this.os.removeTaggedNatRules(this.tag)
    if (n) this.log?.warn({ rules: n }, 'removed NAT rules left by an earlier run that did not stop cleanly')
    return n
  }

  /** ManageNat: IP forwarding on, one tagged SNAT rule per provided route. Returns warnings for status. */
  async applyNat(): Promise<string[]> {
    const en = this.profile.exitNode
    if (!en.manageNat || !en.providesRoutes.length) return []
    if (!this.os.ipForwardEnabled()) {
      this.os.enableIpForward()
      this.enabledForward = true
      this.log?.info('ManageNat: enabled net.ipv4.ip_forward (stop turns it off again)')
    }
    if ((await this.os.natRules()) === undefined)
      return ['ManageNat needs iptables (iptables-nft works) and it is not installed: add the SNAT rules by hand (nft or iptables)']
    const warnings: string[] = []
    await this.os.removeTaggedNatRules(this.tag)
    for (const c of en.providesRoutes) {
      const to = en.snatAddress !== undefined ? intToIp(en.snatAddress) : await this.os.lanAddressFor(c)
      if (!to) {
        warnings.push(`ManageNat: no local address reaches ${c.text}; no SNAT rule added`)
        continue
      }
      try {
        await this.os.addNatRule(natRuleArgs(c, to, this.tag))
        this.log?.info({ route: c.text, to }, 'ManageNat: added SNAT rule')
      } catch (e) {
        warnings.push(`ManageNat: could not add the SNAT rule for ${c.text}: ${(e as Error).message}`)
      }
    }
    return warnings
  }

  /** Removes ManageNat's SNAT rules, and turns IP forwarding off again if ManageNat turned it on (at stop). */
  async removeNat(): Promise<number> {
    const n = await this.os.removeTaggedNatRules(this.tag)
    if (n) this.log?.info({ rules: n }, 'ManageNat: removed our SNAT rules')
    if (this.enabledForward && this.os.ipForwardEnabled()) {
      this.os.disableIpForward()
      this.enabledForward = false
      this.log?.info('ManageNat: turned net.ipv4.ip_forward off again (it was off before the agent started)')
    }
    return n
  }

  // ---------------------------------------------------------------- after a crash

  /**
   * What a run that died without stopping left: fail-closed routes and policy rules, anti-spoofing rules,
   * the reply-only rule, SNAT rules. Only call this when no agent holds the run directory (see
   * crash-leftovers.ts).
   */
  async removeAfterCrash(): Promise<number> {
    return (
      (await removeCrashLeftovers(agentFwmark(this.profile.localPort), this.os)) +
      (await this.os.removeTaggedRawRules(this.tag)) +
      (await this.os.removeTaggedMangleForwardRules(this.tag)) +
      (await this.os.removeTaggedNatRules(this.tag))
    )
  }

  // ---------------------------------------------------------------- checks

  /**
   * The checks of what should be in place: the anti-spoofing rule for `tun` (a failure only while an agent
   * runs, `running`), and on an exit node the reply-only rule (the same), IP forwarding, a SNAT rule for
   * each provided route, and NAT rules that could give LAN hosts this node's virtual address.
   */
  async check(tun: string, running: boolean): Promise<FootprintCheck[]> {
    const out: FootprintCheck[] = []
    const raw = await this.os.rawPreroutingRules()
    if (raw && hasAntiSpoofRule(raw, tun, this.tag))
      out.push({ name: 'anti-spoofing', result: 'pass', detail: `overlay sources arriving outside ${tun} are dropped (raw PREROUTING)` })
    else if (running || !raw)
      out.push({
        name: 'anti-spoofing',
        result: running && raw ? 'fail' : 'warn',
        detail: raw
          ? `no raw PREROUTING rule drops 100.64.0.0/10 sources arriving outside ${tun}: LAN hosts can forge peers' addresses`
          : 'iptables is not available: cannot check the anti-spoofing rule',
        fix: `${antiSpoofCommand(antiSpoofRuleArgs(tun, intToIp(this.profile.virtualAddress), this.tag)[0])} (the agent adds it at start when iptables is installed)`,
      })
    const provides = this.profile.exitNode.providesRoutes
    if (!provides.length) return out
    if (this.os.ipForwardEnabled()) out.push({ name: 'ip_forward', result: 'pass', detail: 'net.ipv4.ip_forward = 1' })
    else
      out.push({
        name: 'ip_forward',
        result: 'fail',
        detail: 'IP forwarding is off (net.ipv4.ip_forward = 0), so nothing reaches the LAN',
        fix: IP_FORWARD_COMMAND,
        hint: 'and set it in /etc/sysctl.conf, or let the agent manage it: "ExitNode": {"ManageNat": true}',
      })
    const fwd = await this.os.mangleForwardRules()
    const guarded = fwd !== undefined && hasReplyOnlyForwardRule(fwd, tun, this.tag)
    if (guarded) {
      const n = await this.os.mangleForwardDrops(this.tag)
      out.push({
        name: REPLY_ONLY_CHECK,
        result: 'pass',
        detail: `new connections forwarded into ${tun} (from the LAN) are dropped before NAT (mangle FORWARD: ${n ?? '?'} packets so far)`,
      })
    } else if (running || !fwd)
      out.push({
        name: REPLY_ONLY_CHECK,
        result: running && fwd ? 'fail' : 'warn',
        detail: fwd
          ? `no mangle FORWARD rule drops new connections forwarded into ${tun}: with a LAN NAT rule that also rewrites packets into ${tun}, LAN hosts can start connections to peers`
          : 'iptables is not available: cannot check the reply-only FORWARD rule',
        fix: `${replyOnlyForwardCommand(replyOnlyForwardArgs(tun, this.tag))} (the agent adds it at start when iptables is installed)`,
      })
    const rules = await this.os.natRules()
    for (const r of rules ?? []) {
      if (!natRewritesLanToSelf(r, tun, this.profile.virtualAddress)) continue
      out.push({
        name: 'LAN NAT',
        result: guarded ? 'warn' : 'fail',
        detail:
          `NAT rule \`-A POSTROUTING ${r.spec}\` can rewrite LAN hosts' packets into ${tun} to this node's virtual address, ` +
          `which peers take for this node's own traffic; ${guarded ? `the agent's FORWARD rule drops new connections into ${tun}, replies pass` : `nothing stops LAN hosts from starting connections to peers`}`,
        fix: `sudo iptables -t nat -I POSTROUTING -o ${tun} -j RETURN`,
        hint: `or give the rule the LAN's or the uplink's interface (-o <interface>), or add \`! -o ${tun}\``,
      })
    }
    for (const c of provides) {
      const rule = rules && natCovers(rules, c)
      if (rule) {
        out.push({
          name: `SNAT ${c.text}`,
          result: 'pass',
          detail: `${rule.target}${rule.to ? ` to:${rule.to}` : ''} (${rule.pkts} packets, ${rule.bytes} bytes so far)`,
        })
        continue
      }
      const to = (await this.os.lanAddressFor(c)) ?? "<this node's LAN address>"
      out.push({
        name: `SNAT ${c.text}`,
        result: 'fail',
        detail: rules
          ? `no SNAT or MASQUERADE rule translates 100.64.0.0/10 to ${c.text}, so LAN hosts cannot answer`
          : 'iptables is not available: cannot check the SNAT rules',
        fix: guideSnatCommand(to, { dst: c.text }),
      })
    }
    return out
  }
}

/** The name of the reply-only FORWARD rule's check (status and doctor). */
export const REPLY_ONLY_CHECK = 'reply-only (FORWARD)'

/** A failed or warned check as one status line: what is wrong, then the command that fixes it. */
export function checkWarning(c: FootprintCheck): string {
  return c.fix ? `${c.detail}: run \`${c.fix}\`${c.hint ? ` (${c.hint})` : ''}` : c.detail
}
