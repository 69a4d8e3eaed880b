/** Rate-limit keys for a client's address, shared by the agents' listener and the portal. */

/**
 * Where a connection comes from, for limits: an IPv4 address (an IPv4-mapped IPv6 address is its IPv4
 * address), or the /64 of an IPv6 address (one host or site holds a whole /64).
 */
export function sourceKey(address: string): string {
  const a = address.replace(/%.*$/, '').toLowerCase()
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a)
  if (mapped) return mapped[1]
  if (!a.includes(':')) return a
  const [head, tail] = a.split('::')
  const h = head ? head.split(':') : []
  const t = tail === undefined ? [] : tail ? tail.split(':') : []
  // An embedded IPv4 address in the tail fills two groups.
  const tailGroups = t.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0)
  const groups = tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - tailGroups)).fill('0'), ...t]
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`
}
