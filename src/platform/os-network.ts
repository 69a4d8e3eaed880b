/**
 * The control thread's OS seam: what the agent changes in the operating system (interface address,
 * routes, policy rules, sysctl, iptables) goes through one OsNetwork. `linuxNetwork` is iproute2 and
 * iptables (src/platform/linux/net.ts); `MemoryOsNetwork` (src/platform/memory-network.ts) keeps the same
 * state in memory and records every change, for whole agents in one process without root.
 */
import type { Cidr } from '../common/ipv4.js'
import * as net from './linux/net.js'
import type { NatRule, OsRoute } from './linux/net.js'

export interface OsNetwork {
  configureInterface(dev: string, address: number, mtu: number): Promise<void>
  listRoutes(table?: string): Promise<OsRoute[]>
  addRoute(cidr: Cidr, dev: string, table?: string): Promise<void>
  delRoute(cidr: Cidr, dev: string, table?: string): Promise<void>
  addUnreachableRoute(cidr: Cidr, metric: number, table?: string): Promise<void>
  delUnreachableRoute(cidr: Cidr, metric: number, table?: string): Promise<boolean>
  listUnreachableRoutes(metric: number, table?: string): Promise<Cidr[]>
  /** `bypass`: addresses routed by the main table whole, default route included (the hub). */
  addDefaultRouteRules(fwmark: number, bypass?: readonly number[]): Promise<void>
  addIpv6Block(metric: number): Promise<boolean>
  delIpv6Block(metric: number): Promise<boolean>
  removeDefaultRouteRules(fwmark: number): Promise<number>
  ipForwardEnabled(): boolean
  enableIpForward(): void
  disableIpForward(): void
  lanAddressFor(cidr: Cidr): Promise<string | undefined>
  /** This machine's own IPv4 addresses, all interfaces (`ip -4 addr`), host order. */
  localAddresses(): Promise<number[]>
  natRules(): Promise<NatRule[] | undefined>
  addNatRule(args: string[]): Promise<void>
  removeTaggedNatRules(tag: string): Promise<number>
  rawPreroutingRules(): Promise<string[] | undefined>
  insertRawRule(args: string[]): Promise<void>
  removeTaggedRawRules(tag: string): Promise<number>
  mangleForwardRules(): Promise<string[] | undefined>
  /** Packets the reply-only rule tagged `tag` dropped so far. */
  mangleForwardDrops(tag: string): Promise<number | undefined>
  insertMangleForwardRule(args: string[]): Promise<void>
  removeTaggedMangleForwardRules(tag: string): Promise<number>
}

export const linuxNetwork: OsNetwork = {
  configureInterface: net.configureInterface,
  listRoutes: net.listRoutes,
  addRoute: net.addRoute,
  delRoute: net.delRoute,
  addUnreachableRoute: net.addUnreachableRoute,
  delUnreachableRoute: net.delUnreachableRoute,
  listUnreachableRoutes: net.listUnreachableRoutes,
  addDefaultRouteRules: net.addDefaultRouteRules,
  addIpv6Block: net.addIpv6Block,
  delIpv6Block: net.delIpv6Block,
  removeDefaultRouteRules: net.removeDefaultRouteRules,
  ipForwardEnabled: net.ipForwardEnabled,
  enableIpForward: net.enableIpForward,
  disableIpForward: net.disableIpForward,
  lanAddressFor: net.lanAddressFor,
  localAddresses: net.localAddresses,
  natRules: net.natRules,
  addNatRule: net.addNatRule,
  removeTaggedNatRules: net.removeTaggedNatRules,
  rawPreroutingRules: net.rawPreroutingRules,
  insertRawRule: net.insertRawRule,
  removeTaggedRawRules: net.removeTaggedRawRules,
  mangleForwardRules: net.mangleForwardRules,
  mangleForwardDrops: net.mangleForwardDrops,
  insertMangleForwardRule: net.insertMangleForwardRule,
  removeTaggedMangleForwardRules: net.removeTaggedMangleForwardRules,
}
