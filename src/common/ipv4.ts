/**
 * IPv4 addresses and CIDR networks, shared by every layer (ipaddr.js parses; we add the rules).
 * Accepted form for routes: a.b.c.d/len with len 0..32 and no host bits set.
 */
import ipaddr from 'ipaddr.js'

export interface Cidr {
  addr: number // host-order uint32, network address
  len: number
  text: string // canonical a.b.c.d/len
}

export const CIDR_FORM = 'an IPv4 network in CIDR form a.b.c.d/len, len 0-32, e.g. 172.26.0.0/20'

export function ipToInt(octets: number[]): number {
  return ((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0
}

export function intToIp(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
}

export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0
}

/** Parses a dotted-quad IPv4 address; returns a reason string on failure. */
export function parseIpv4(s: unknown): number | string {
  if (typeof s !== 'string') return 'must be a string with an IPv4 address'
  if (!ipaddr.IPv4.isValidFourPartDecimal(s)) {
    if (ipaddr.IPv6.isValid(s)) return `"${s}" is IPv6; only IPv4 addresses are supported here`
    return `"${s}" is not an IPv4 address (expected a.b.c.d)`
  }
  return ipToInt(ipaddr.IPv4.parse(s).octets)
}

export function parseCidr(s: unknown): Cidr | string {
  if (typeof s !== 'string') return `must be a string: ${CIDR_FORM}`
  const slash = s.indexOf('/')
  if (slash < 0) return `"${s}" has no prefix length; expected ${CIDR_FORM} (use /32 for one host)`
  const ipPart = s.slice(0, slash)
  const lenPart = s.slice(slash + 1)
  if (ipaddr.IPv6.isValid(ipPart)) return `"${s}" is IPv6; only IPv4 routes are supported (${CIDR_FORM})`
  if (!ipaddr.IPv4.isValidFourPartDecimal(ipPart)) return `"${s}" is not ${CIDR_FORM}`
  if (!/^\d{1,2}$/.test(lenPart) || Number(lenPart) > 32) return `"${s}" has prefix length /${lenPart}; IPv4 allows /0 to /32`
  const len = Number(lenPart)
  const addr = ipToInt(ipaddr.IPv4.parse(ipPart).octets)
  const net = (addr & maskOf(len)) >>> 0
  if (net !== addr) return `"${s}" has host bits set; did you mean ${intToIp(net)}/${len}?`
  return { addr: net, len, text: `${intToIp(net)}/${len}` }
}

export function cidrContains(outer: Cidr, addr: number): boolean {
  return (addr & maskOf(outer.len)) >>> 0 === outer.addr
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const len = Math.min(a.len, b.len)
  const m = maskOf(len)
  return (a.addr & m) >>> 0 === (b.addr & m) >>> 0
}
