/**
 * Architecture rules, checked on the sources: an allowed-imports matrix between the parts (lower layers
 * never reach up; the data plane never reaches into the OS layer; commands never touch the data plane;
 * only `run` imports the daemon), one file loads the addon, the import graph has no cycles, and each
 * group of a peer's runtime state has one writer.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..')

function files(dir: string): string[] {
  const out: string[] = []
  for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...files(rel))
    else if (rel.endsWith('.ts')) out.push(rel)
  }
  return out
}

function imports(file: string): string[] {
  const src = fs.readFileSync(path.join(ROOT, file), 'utf8')
  const out: string[] = []
  // Multi-line import lists included: anything up to `from '…'` that is not a statement end.
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;'"]*?from\s+['"]([^'"]+)['"]/g)) {
    const spec = m[1]
    out.push(spec.startsWith('.') ? path.join(path.dirname(file), spec).replace(/\.js$/, '.ts') : spec)
  }
  return out
}

t.test('only src/native/io.ts loads the native addon', async (t) => {
  const loaders = [...files('src'), ...files('workers'), ...files('bench')].filter((f) =>
    fs.readFileSync(path.join(ROOT, f), 'utf8').includes('enclave_io.node'),
  )
  t.same(loaders, ['src/native/io.ts'])
})

/**
 * Which part may import which (besides itself and node: or npm packages). A part is a folder under src/,
 * or workers/ and bench/. Lower parts never reach up: nothing below control imports control, the data
 * plane never imports the OS layer, commands never touch the data plane or the workers.
 */
const ALLOWED: Record<string, string[]> = {
  // What every part may use.
  'src/top': ['src/config', 'src/api'],
  'src/types': [],
  'src/common': [],
  'src/protocol': ['src/common'],
  'src/io': ['src/common'],
  'src/ipc': ['src/common', 'src/protocol', 'src/io'],
  'src/dataplane': ['src/common', 'src/protocol', 'src/ipc', 'src/io'],
  // The workers' JIT warm-up: a session pair set up as control sets one up (keypair slots, peer memory,
  // compiled tables), driven through the data plane. Only workers/dataplane.ts loads it.
  'src/warmup': ['src/common', 'src/protocol', 'src/ipc', 'src/io', 'src/dataplane', 'src/compile', 'src/agent'],
  'src/native': ['src/io'],
  'src/platform': ['src/common', 'src/top'],
  workers: ['src/common', 'src/protocol', 'src/ipc', 'src/io', 'src/dataplane', 'src/native', 'src/warmup'],
  // What the CLI also reads: the profile, the compilers, the log, the views, the control-socket client, operations.
  'src/config': ['src/top', 'src/common', 'src/protocol', 'src/hubproto'],
  // The hub's wire format (shared by the hub and the agent) and the hub server: never the daemon's parts.
  'src/hubproto': ['src/common', 'src/protocol', 'src/config'],
  // src/native: the relay's batched sockets (fast-relay.ts).
  'src/hub': ['src/top', 'src/common', 'src/protocol', 'src/config', 'src/hubproto', 'src/log', 'src/native'],
  'src/log': ['src/top', 'src/common', 'src/platform'],
  'src/compile': ['src/common', 'src/protocol', 'src/ipc', 'src/dataplane', 'src/platform', 'src/config'],
  'src/views': ['src/top', 'src/common', 'src/ipc', 'src/config', 'src/compile'],
  'src/api': ['src/top', 'src/config'],
  'src/ops': [
    'src/top',
    'src/common',
    'src/native',
    'src/platform',
    'src/config',
    'src/compile',
    'src/log',
    'src/views',
    'src/api',
    'src/hubproto',
  ],
  // The daemon only.
  'src/agent': [
    'src/top',
    'src/common',
    'src/protocol',
    'src/io',
    'src/ipc',
    'src/dataplane',
    'src/native',
    'src/platform',
    'src/config',
    'src/log',
    'src/compile',
    'src/views',
    'src/api',
    'src/ops',
    'src/hubproto',
  ],
  'src/lab': ['src/common', 'src/platform', 'src/config', 'src/ops'],
  'src/demo': ['src/common', 'src/lab', 'src/config', 'src/ops'],
  'src/commands': [
    'src/top',
    'src/common',
    'src/platform',
    'src/config',
    'src/log',
    'src/compile',
    'src/views',
    'src/api',
    'src/ops',
    'src/demo',
    'src/agent',
    'src/hub',
    'src/hubproto',
  ],
  'src/hooks': ['src/config'],
  bench: [
    'src/common',
    'src/protocol',
    'src/ipc',
    'src/io',
    'src/dataplane',
    'src/native',
    'src/platform',
    'src/config',
    'src/compile',
    'src/log',
    'src/agent',
    'src/lab',
    'workers',
    'src/hub',
    'src/hubproto',
    'src/warmup',
  ],
}

function partOf(file: string): string {
  const [top, sub, rest] = file.split('/')
  if (top !== 'src') return top
  return rest === undefined ? 'src/top' : `${top}/${sub}`
}

t.test('every import follows the allowed-imports matrix', async (t) => {
  const bad: string[] = []
  const all = [...files('src'), ...files('workers'), ...files('bench')]
  for (const f of all) {
    const from = partOf(f)
    if (!(from in ALLOWED)) {
      bad.push(`${f}: part ${from} is not in the matrix`)
      continue
    }
    for (const i of imports(f)) {
      if (!i.endsWith('.ts')) continue
      const to = partOf(i)
      if (to !== from && !ALLOWED[from].includes(to)) bad.push(`${f} -> ${i}`)
    }
  }
  t.same(bad, [], bad.join('\n'))
  t.ok(all.length > 100, `checked ${all.length} files`)
  t.equal(partOf('src/ipc/messages.ts'), 'src/ipc')
  t.notOk(ALLOWED['src/ipc'].includes('src/dataplane'), 'ipc does not import the data plane (PolicyTable lives in ipc)')
})

t.test('of the commands, only `run` imports the daemon (src/agent); the rest talk to it over the socket', async (t) => {
  const importers = files('src/commands').filter((f) => imports(f).some((i) => i.startsWith('src/agent/')))
  t.same(importers, ['src/commands/run.ts'])
})

/** Every cycle in the import graph (each reported once, from its smallest file name). */
function cycles(graph: Map<string, string[]>): string[][] {
  const out: string[][] = []
  const seen = new Set<string>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const visit = (f: string) => {
    stack.push(f)
    onStack.add(f)
    for (const g of graph.get(f) ?? []) {
      if (onStack.has(g)) {
        const cyc = stack.slice(stack.indexOf(g))
        const key = [...cyc].sort().join(' ')
        if (!seen.has(key)) {
          seen.add(key)
          out.push([...cyc, g])
        }
      } else if (graph.has(g) && !done.has(g)) visit(g)
    }
    stack.pop()
    onStack.delete(f)
    done.add(f)
  }
  const done = new Set<string>()
  for (const f of graph.keys()) if (!done.has(f)) visit(f)
  return out
}

t.test('no import cycles anywhere', async (t) => {
  const all = [...files('src'), ...files('workers'), ...files('bench')]
  const graph = new Map(all.map((f) => [f, imports(f).filter((i) => i.endsWith('.ts'))]))
  const found = cycles(graph)
  t.same(
    found.map((c) => c.join(' -> ')),
    [],
    'import cycles',
  )
  t.ok(graph.get('src/agent/agent.ts')?.includes('src/agent/control-socket.ts'), 'the graph sees the agent importing the server')
  t.same(
    cycles(
      new Map([
        ['a', ['b']],
        ['b', ['c']],
        ['c', ['a']],
      ]),
    ),
    [['a', 'b', 'c', 'a']],
    'the cycle finder finds a cycle',
  )
})

t.test("each group of a peer's runtime state has one writer (src/agent/peers/peer-table.ts)", async (t) => {
  const owners: Record<string, string[]> = {
    session: ['src/agent/peers/sessions.ts'],
    hs: ['src/agent/peers/handshakes.ts'],
    ep: ['src/agent/peers/endpoints.ts'],
    health: ['src/agent/peers/peer-timers.ts'],
    seen: ['src/agent/peers/peer-timers.ts'],
    'crypto.handshake': ['src/agent/peers/handshakes.ts'],
    crypto: ['src/agent/peers/reload.ts'],
    cfg: ['src/agent/peers/reload.ts'],
  }
  const writers: Record<string, Set<string>> = Object.fromEntries(Object.keys(owners).map((k) => [k, new Set<string>()]))
  for (const f of files('src')) {
    const src = fs.readFileSync(path.join(ROOT, f), 'utf8')
    for (const m of src.matchAll(
      /\b(?:peer|p|c\.peer)\??\.(session|hs|ep|health|seen)(?:\.\w+|\[\w+\])\s*(?:=(?!=)|\+\+|\.push|\.shift|\.splice)/g,
    ))
      writers[m[1]].add(f)
    for (const m of src.matchAll(/\b(?:peer|p|c\.peer)\.(crypto\.handshake|crypto|cfg)\s*=(?!=)/g)) writers[m[1]].add(f)
  }
  for (const [group, allowed] of Object.entries(owners)) {
    const extra = [...writers[group]].filter((f) => !allowed.includes(f))
    t.same(extra, [], `${group} is written only by ${allowed.join(', ')}`)
    t.ok(writers[group].size > 0, `${group}: its writer was found (the scan sees writes)`)
  }
})
