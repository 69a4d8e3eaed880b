/**
 * Longest-prefix-match table for IPv4 as a stride-8 multibit trie in two Int32Arrays
 * (at most 4 steps, no allocation per lookup). Built by control with ipaddr.js-validated input,
 * sent to workers as plain arrays, and swapped whole: a worker never sees a half-built table.
 *
 * Node n owns entries [n*256, n*256+256). val[e] = value+1 of the longest prefix covering the
 * entry at that depth (0 = none); child[e] = index of the next-level node (0 = none; node 0 is the root).
 */
export interface RouteTable {
  child: Int32Array
  val: Int32Array
  /** The prefixes this table was built from, for status and debugging. */
  entries: RouteEntry[]
}

export interface RouteEntry {
  addr: number
  len: number
  value: number
}

export function buildRouteTable(entries: RouteEntry[]): RouteTable {
  const sorted = [...entries].sort((a, b) => a.len - b.len)
  let child = new Int32Array(256)
  let val = new Int32Array(256)
  let nodes = 1
  const grow = () => {
    if ((nodes + 1) * 256 <= child.length) return
    const c2 = new Int32Array(child.length * 2)
    c2.set(child)
    const v2 = new Int32Array(val.length * 2)
    v2.set(val)
    child = c2
    val = v2
  }
  for (const e of sorted) {
    const addr = e.addr >>> 0
    let node = 0
    const depth = e.len === 0 ? 0 : Math.floor((e.len - 1) / 8)
    for (let d = 0; d < depth; d++) {
      const idx = node * 256 + ((addr >>> (24 - 8 * d)) & 255)
      if (child[idx] === 0) {
        grow()
        const n = nodes++
        // The new node inherits the covering prefix so that lookups can stop at the deepest node.
        val.fill(val[idx], n * 256, n * 256 + 256)
        child[idx] = n
      }
      node = child[idx]
    }
    const span = 1 << (8 * (depth + 1) - e.len)
    const start = (addr >>> (24 - 8 * depth)) & 255 & ~(span - 1)
    for (let i = start; i < start + span; i++) setCovering(child, val, node * 256 + i, e.value + 1)
  }
  return { child: child.slice(0, nodes * 256), val: val.slice(0, nodes * 256), entries: sorted }
}

/** Sets an entry and pushes the value down into inherited entries of existing children. */
function setCovering(child: Int32Array, val: Int32Array, idx: number, v: number): void {
  const old = val[idx]
  val[idx] = v
  const c = child[idx]
  if (c === 0) return
  for (let i = c * 256; i < c * 256 + 256; i++) if (val[i] === old) setCovering(child, val, i, v)
}

/** Returns the value of the longest matching prefix, or -1. */
export function lookupRoute(child: Int32Array, val: Int32Array, addr: number): number {
  return lookupRoute16(child, val, (addr >>> 16) & 0xffff, addr & 0xffff)
}

/**
 * The hot-path form: the address as two 16-bit halves. Full IPv4 addresses do not fit V8's small
 * integers and would be boxed (allocated) when passed to a function; halves never are.
 */
export function lookupRoute16(child: Int32Array, val: Int32Array, hi: number, lo: number): number {
  const addr = (hi << 16) | lo
  let idx = (addr >>> 24) & 255
  let best = val[idx]
  let c = child[idx]
  if (c !== 0) {
    idx = c * 256 + ((addr >>> 16) & 255)
    best = val[idx]
    c = child[idx]
    if (c !== 0) {
      idx = c * 256 + ((addr >>> 8) & 255)
      best = val[idx]
      c = child[idx]
      if (c !== 0) {
        idx = c * 256 + (addr & 255)
        best = val[idx]
      }
    }
  }
  return best - 1
}
