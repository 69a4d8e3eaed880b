/**
 * Architecture rules, checked on the sources: the lower layers (common, ipc, protocol, dataplane,
 * platform, native) never reach into control or the CLI; the data plane never reaches into platform
 * code or oclif; commands never touch the data plane directly; one file loads the addon; and the
 * import graph has no cycles.
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

const dataplane = [...files('src/dataplane'), ...files('workers')]
const forbiddenForDataplane = [/^src\/control\//, /^src\/commands\//, /^src\/platform\//, /^@oclif\//, /^src\/demo\//]

t.test('the data plane imports no control, CLI or platform code', async (t) => {
  const bad: string[] = []
  for (const f of dataplane) for (const i of imports(f)) if (forbiddenForDataplane.some((re) => re.test(i))) bad.push(`${f} -> ${i}`)
  t.same(bad, [], bad.join('\n'))
  t.ok(dataplane.length >= 8, `checked ${dataplane.length} data-plane files`)
  t.ok(imports('src/dataplane/pipeline.ts').includes('src/ipc/layout.ts'), 'multi-line imports are seen')
})

t.test('commands talk to the daemon, not to the data plane', async (t) => {
  const bad: string[] = []
  for (const f of files('src/commands')) for (const i of imports(f)) if (/^src\/dataplane\/|^workers\//.test(i)) bad.push(`${f} -> ${i}`)
  t.same(bad, [], bad.join('\n'))
})

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
  'src/common': [],
  'src/protocol': ['src/common'],
  'src/io': ['src/common'],
  'src/ipc': ['src/common', 'src/protocol', 'src/io'],
  'src/dataplane': ['src/common', 'src/protocol', 'src/ipc', 'src/io'],
  'src/native': ['src/io'],
  'src/platform': ['src/common', 'src/top'],
  workers: ['src/common', 'src/protocol', 'src/ipc', 'src/io', 'src/dataplane', 'src/native'],
  'src/control': ['src/top', 'src/common', 'src/protocol', 'src/io', 'src/ipc', 'src/dataplane', 'src/native', 'src/platform'],
  'src/lab': ['src/common', 'src/platform', 'src/control'],
  'src/demo': ['src/common', 'src/lab', 'src/control'],
  'src/commands': ['src/top', 'src/common', 'src/platform', 'src/control', 'src/demo'],
  'src/hooks': ['src/control'],
  'src/top': ['src/control'],
  'src/types': [],
  bench: [
    'src/common',
    'src/protocol',
    'src/ipc',
    'src/io',
    'src/dataplane',
    'src/native',
    'src/platform',
    'src/control',
    'src/lab',
    'workers',
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
  t.ok(graph.get('src/control/agent.ts')?.includes('src/control/api/server.ts'), 'the graph sees the agent importing the server')
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

t.test("each group of a peer's runtime state has one writer (src/control/peer-table.ts)", async (t) => {
  const owners: Record<string, string[]> = {
    session: ['src/control/sessions.ts'],
    hs: ['src/control/handshakes.ts'],
    ep: ['src/control/endpoints.ts'],
    health: ['src/control/peer-timers.ts'],
    seen: ['src/control/peer-timers.ts'],
    'crypto.handshake': ['src/control/handshakes.ts'],
    crypto: ['src/control/reload.ts'],
    cfg: ['src/control/reload.ts'],
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
