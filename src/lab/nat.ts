/**
 * NAT routers in network namespaces (hub spec §4.5, issue 20): an "internet" namespace holding a bridge
 * for 198.51.100.0/24, public hosts on it, and per site a router namespace (`wan0` on the bridge, `lan0` a
 * bridge for the site LAN 10.N.0.0/24) with hosts behind it. Each router applies one profile of the
 * spec's table with iptables. Helpers add a delay on a link, count a router's WAN packets per peer address
 * (the "ground truth on the wire" signal), and rebind a router's mapping. Every address exists only inside
 * namespaces of the given Lab, which deletes them (and ends the processes started here, by PID) at teardown.
 *
 * `UdpPeer` is a small python3 UDP/TCP endpoint run inside a namespace, driven over its stdin and
 * reporting what it receives as JSON lines: the probe the NAT tests use to see mappings from outside.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import type { Lab } from './lab.js'

export type NatProfile = 'easy' | 'fullcone' | 'masq' | 'hard' | 'udp-blocked' | 'short-timeout'
export const NAT_PROFILES: readonly NatProfile[] = ['easy', 'fullcone', 'masq', 'hard', 'udp-blocked', 'short-timeout']

/** The internet's prefix (TEST-NET-2): the hub is .10, site N's router .(10+N), public hosts from .20. */
export const INTERNET_PREFIX = '198.51.100'
export const HUB_ADDR = `${INTERNET_PREFIX}.10`

export interface NatHost {
  name: string
  ns: string
  /** Its address (no prefix length). */
  addr: string
  /** Its only interface (eth0). */
  dev: string
}

export interface NatSite {
  n: number
  profile: NatProfile
  /** The router's namespace. */
  router: string
  /** The router's current WAN address (on wan0); rebind() may change it. */
  wanAddr: string
  /** The router's LAN address, 10.N.0.1. */
  lanAddr: string
  /** easy, fullcone, short-timeout: the LAN host and port given a fixed public port (10.N.0.2:51820). */
  fixedHost: string
  fixedPort: number
  /** The public port fixedHost:fixedPort is mapped to (51820 until rebind() changes it). */
  mappedPort: number
  hosts: NatHost[]
}

export interface SiteOptions {
  /** The LAN host's port given the fixed mapping in easy/fullcone/short-timeout (default 51820). */
  port?: number
  /** The short-timeout profile's conntrack UDP timeouts in seconds (default 10 and 15, as the spec). */
  udpTimeout?: number
  udpStreamTimeout?: number
}

export interface PeerCounters {
  /** Packets and bytes forwarded in from the peer address (-i wan0 -s peer). */
  inPackets: number
  inBytes: number
  /** Packets and bytes forwarded out to the peer address (-o wan0 -d peer). */
  outPackets: number
  outBytes: number
}

async function must(lab: Lab, ns: string, cmd: string, args: string[]): Promise<string> {
  const r = await lab.exec(ns, cmd, args)
  if (r.code !== 0) throw new Error(`${ns}: ${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`)
  return r.stdout
}

const COUNT_TAG = 'natlab-peer'

export class NatLab {
  /** The internet namespace (holds bridge inet0); made by internet(). */
  inet = ''
  private plugs = 0
  private making?: Promise<string>
  private queues = 0
  readonly sites: NatSite[] = []
  readonly publics: NatHost[] = []

  constructor(readonly lab: Lab) {}

  /** Makes the internet namespace with its bridge (no address of its own). Called by the others when needed. */
  internet(): Promise<string> {
    this.making ??= (async () => {
      const ns = await this.lab.addNs('inet')
      await must(this.lab, ns, 'ip', ['link', 'add', 'inet0', 'type', 'bridge'])
      await must(this.lab, ns, 'ip', ['link', 'set', 'inet0', 'up'])
      this.inet = ns
      return ns
    })()
    return this.making
  }

  /** A veth from `ns` (named `dev`, with `addrCidr`) plugged into the bridge `br` of `brNs`. */
  private async plug(ns: string, dev: string, addrCidr: string, brNs: string, br: string): Promise<void> {
    const port = `${br}p${this.plugs++}`
    await this.lab.link(ns, dev, addrCidr, brNs, port, '')
    await must(this.lab, brNs, 'ip', ['link', 'set', port, 'master', br])
  }

  /** A public host on the internet bridge at `addr` (198.51.100.x; the hub is HUB_ADDR). */
  async publicHost(name: string, addr: string): Promise<NatHost> {
    const inet = await this.internet()
    const ns = await this.lab.addNs(name)
    await this.plug(ns, 'eth0', `${addr}/24`, inet, 'inet0')
    const h = { name, ns, addr, dev: 'eth0' }
    this.publics.push(h)
    return h
  }

  /**
   * Site N (1..89): router namespace `natN` with wan0 198.51.100.(10+N)/24 on the internet bridge (keep
   * public hosts off .(10+N): the test puts them at .20 and up with sites 1..9) and
   * lan0 (a bridge) 10.N.0.1/24, forwarding on, the profile's rules applied. Add hosts with siteHost().
   */
  async site(n: number, profile: NatProfile, opts: SiteOptions = {}): Promise<NatSite> {
    if (!Number.isInteger(n) || n < 1 || n > 89) throw new Error(`site number ${n} is outside 1..89`)
    const inet = await this.internet()
    const router = await this.lab.addNs(`nat${n}`)
    const site: NatSite = {
      n,
      profile,
      router,
      wanAddr: `${INTERNET_PREFIX}.${10 + n}`,
      lanAddr: `10.${n}.0.1`,
      fixedHost: `10.${n}.0.2`,
      fixedPort: opts.port ?? 51820,
      mappedPort: opts.port ?? 51820,
      hosts: [],
    }
    await this.plug(router, 'wan0', `${site.wanAddr}/24`, inet, 'inet0')
    await must(this.lab, router, 'ip', ['link', 'add', 'lan0', 'type', 'bridge'])
    await must(this.lab, router, 'ip', ['addr', 'add', `${site.lanAddr}/24`, 'dev', 'lan0'])
    await must(this.lab, router, 'ip', ['link', 'set', 'lan0', 'up'])
    await must(this.lab, router, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1'])
    if (profile === 'short-timeout') {
      // Per namespace since Linux 4.x (nf_conntrack_udp_timeout is a per-netns sysctl).
      await must(this.lab, router, 'sysctl', [
        '-qw',
        `net.netfilter.nf_conntrack_udp_timeout=${opts.udpTimeout ?? 10}`,
        `net.netfilter.nf_conntrack_udp_timeout_stream=${opts.udpStreamTimeout ?? 15}`,
      ])
    }
    for (const rule of filterRules(profile)) await must(this.lab, router, 'iptables', rule)
    for (const rule of natRules(site)) await must(this.lab, router, 'iptables', rule)
    this.sites.push(site)
    return site
  }

  /** A host on the site's LAN at 10.N.0.<index> (index 2 is the one with the fixed mapping), default route via the router. */
  async siteHost(site: NatSite, name: string, index = 2 + site.hosts.length): Promise<NatHost> {
    const ns = await this.lab.addNs(name)
    const addr = `10.${site.n}.0.${index}`
    await this.plug(ns, 'eth0', `${addr}/24`, site.router, 'lan0')
    await must(this.lab, ns, 'ip', ['route', 'add', 'default', 'via', site.lanAddr])
    const h = { name, ns, addr, dev: 'eth0' }
    site.hosts.push(h)
    return h
  }

  /**
   * Delays every packet leaving `dev` in `ns` by `ms` (for the hub's link, a relayed round trip then takes
   * at least 2 × ms): `tc qdisc … netem delay`, or, on kernels built without netem, an NFQUEUE rule in
   * mangle POSTROUTING whose verdicts a python3 process in `ns` gives `ms` late (ended by PID at teardown).
   * Returns which of the two it used.
   */
  async delay(ns: string, dev: string, ms: number): Promise<'netem' | 'nfqueue'> {
    const r = await this.lab.exec(ns, 'tc', ['qdisc', 'replace', 'dev', dev, 'root', 'netem', 'delay', `${ms}ms`])
    if (r.code === 0) return 'netem'
    if (!/unknown/i.test(r.stderr)) throw new Error(`${ns}: tc netem on ${dev} failed: ${r.stderr.trim()}`)
    const queue = this.queues++
    const p = spawn('ip', ['netns', 'exec', ns, 'python3', '-u', '-c', DELAY_PY, String(queue), String(ms)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.lab.net.procs.push(p)
    let said = ''
    const ready = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 5000)
      const on = (d: Buffer) => {
        said += d.toString()
        if (said.includes('ready')) clearTimeout(t), resolve(true)
      }
      p.stdout?.on('data', on)
      p.stderr?.on('data', on)
      p.once('exit', () => (clearTimeout(t), resolve(false)))
    })
    if (!ready) throw new Error(`${ns}: no netem qdisc and the NFQUEUE delayer did not start: ${said.trim()}`)
    await must(this.lab, ns, 'iptables', [
      '-t',
      'mangle',
      '-A',
      'POSTROUTING',
      '-o',
      dev,
      '-j',
      'NFQUEUE',
      '--queue-num',
      String(queue),
      '--queue-bypass',
    ])
    return 'nfqueue'
  }

  /** Adds the counting rules for `peer` to the router's mangle FORWARD chain (once per peer). */
  async watchPeer(site: NatSite, peer: string): Promise<void> {
    const c = (dir: string) => ['-m', 'comment', '--comment', `${COUNT_TAG}:${dir}:${peer}`, '-j', 'RETURN']
    await must(this.lab, site.router, 'iptables', ['-t', 'mangle', '-A', 'FORWARD', '-i', 'wan0', '-s', peer, ...c('in')])
    await must(this.lab, site.router, 'iptables', ['-t', 'mangle', '-A', 'FORWARD', '-o', 'wan0', '-d', peer, ...c('out')])
  }

  /** The router's WAN counters per watched peer address (all protocols), read from `iptables -t mangle -L FORWARD -v -x -n`. */
  async wanCounters(site: NatSite): Promise<Record<string, PeerCounters>> {
    const out = await must(this.lab, site.router, 'iptables', ['-t', 'mangle', '-L', 'FORWARD', '-v', '-x', '-n'])
    const res: Record<string, PeerCounters> = {}
    for (const line of out.split('\n')) {
      const m = line.match(new RegExp(`^\\s*(\\d+)\\s+(\\d+)\\s.*/\\* ${COUNT_TAG}:(in|out):([0-9.]+) \\*/`))
      if (!m) continue
      res[m[4]] ??= { inPackets: 0, inBytes: 0, outPackets: 0, outBytes: 0 }
      const e = res[m[4]]
      if (m[3] === 'in') {
        e.inPackets += Number(m[1])
        e.inBytes += Number(m[2])
      } else {
        e.outPackets += Number(m[1])
        e.outBytes += Number(m[2])
      }
    }
    return res
  }

  /**
   * Rebinds the router's mappings as a NAT reboot or address change would: optionally a new WAN address
   * (`ip addr` change of wan0) and a new public port for the fixed mapping, the NAT rules rewritten to
   * match, then every UDP conntrack entry of the router deleted (`conntrack -D -p udp`; when the tool is
   * missing, an address change alone still drops MASQUERADE's entries; `flush: false` skips it). Returns
   * how many entries the conntrack tool deleted, 0 when not asked to, or -1 when it is not installed.
   */
  async rebind(site: NatSite, change: { addr?: string; port?: number; flush?: boolean } = {}): Promise<number> {
    if (change.addr && change.addr !== site.wanAddr) {
      // Delete first: deleting a primary address also deletes the secondaries of its subnet.
      await must(this.lab, site.router, 'ip', ['addr', 'del', `${site.wanAddr}/24`, 'dev', 'wan0'])
      await must(this.lab, site.router, 'ip', ['addr', 'add', `${change.addr}/24`, 'dev', 'wan0'])
      site.wanAddr = change.addr
    }
    if (change.port) site.mappedPort = change.port
    await must(this.lab, site.router, 'iptables', ['-t', 'nat', '-F'])
    for (const rule of natRules(site)) await must(this.lab, site.router, 'iptables', rule)
    if (change.flush === false) return 0
    const r = await this.lab.exec(site.router, 'conntrack', ['-D', '-p', 'udp'])
    if (r.code === 127 || /ENOENT|not found/.test(r.stderr)) return -1
    const m = r.stderr.match(/(\d+) flow entries have been deleted/)
    if (!m) throw new Error(`${site.router}: conntrack -D -p udp: ${r.stderr.trim()}`)
    return Number(m[1])
  }

  /** The router's UDP conntrack entries as `conntrack -L -p udp` prints them (empty when the tool is missing). */
  async conntrackUdp(site: NatSite): Promise<string[]> {
    const r = await this.lab.exec(site.router, 'conntrack', ['-L', '-p', 'udp'])
    return r.code === 0 ? r.stdout.split('\n').filter((l) => l.startsWith('udp')) : []
  }
}

/** The filter rules of a profile (spec §4.5): inbound NEW to the router dropped; APDF for all but fullcone. */
export function filterRules(profile: NatProfile): string[][] {
  const rules = [['-A', 'INPUT', '-i', 'wan0', '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP']]
  if (profile !== 'fullcone')
    rules.push(
      ['-A', 'FORWARD', '-i', 'wan0', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'],
      ['-A', 'FORWARD', '-i', 'wan0', '-j', 'DROP'],
    )
  if (profile === 'udp-blocked') rules.push(['-A', 'FORWARD', '-i', 'lan0', '-o', 'wan0', '-p', 'udp', '-j', 'DROP'])
  return rules
}

/** The nat rules of a site's profile with its current WAN address and mapped port. */
export function natRules(site: NatSite): string[][] {
  const fixed = site.profile === 'easy' || site.profile === 'fullcone' || site.profile === 'short-timeout'
  const rules: string[][] = []
  if (fixed)
    rules.push(
      [
        '-t',
        'nat',
        '-A',
        'POSTROUTING',
        '-o',
        'wan0',
        '-p',
        'udp',
        '-s',
        site.fixedHost,
        '--sport',
        String(site.fixedPort),
        '-j',
        'SNAT',
        '--to-source',
        `${site.wanAddr}:${site.mappedPort}`,
      ],
      [
        '-t',
        'nat',
        '-A',
        'PREROUTING',
        '-i',
        'wan0',
        '-p',
        'udp',
        '--dport',
        String(site.mappedPort),
        '-j',
        'DNAT',
        '--to-destination',
        `${site.fixedHost}:${site.fixedPort}`,
      ],
    )
  rules.push(['-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan0', '-j', 'MASQUERADE', ...(site.profile === 'hard' ? ['--random-fully'] : [])])
  return rules
}

/**
 * The NFQUEUE delayer (argv: queue number, delay in ms): binds the queue over netfilter netlink (copy
 * metadata only) and accepts each queued packet `ms` after it arrived, in arrival order.
 */
const DELAY_PY = `
import select, socket, struct, sys, time
queue, ms = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
s.bind((0, 0))
seq = 0
def msg(kind, attrs):  # nlmsghdr + nfgenmsg (queue number big-endian) + attributes, subsystem NFNL_SUBSYS_QUEUE
    global seq
    seq += 1
    body = struct.pack('!BBH', socket.AF_UNSPEC, 0, queue)
    for t, v in attrs:
        a = struct.pack('=HH', 4 + len(v), t) + v
        body += a + b'\\0' * (-len(a) % 4)
    return struct.pack('=IHHII', 16 + len(body), (3 << 8) | kind, 1, seq, 0) + body
s.send(msg(2, [(1, struct.pack('!BBH', 1, 0, socket.AF_INET))]))  # CONFIG, CMD: BIND
s.send(msg(2, [(2, struct.pack('!IB', 0, 1))]))  # CONFIG, PARAMS: copy metadata only
print('ready', flush=True)
held = []
while True:
    wait = max(0.0, held[0][0] - time.monotonic()) if held else None
    r, _, _ = select.select([s], [], [], wait)
    if r:
        data = s.recv(1 << 20)
        now = time.monotonic()
        off = 0
        while off + 16 <= len(data):
            ln, typ = struct.unpack_from('=IH', data, off)
            if typ == (3 << 8):  # PACKET
                a = off + 20
                while a + 4 <= off + ln:
                    alen, atype = struct.unpack_from('=HH', data, a)
                    if atype & 0x7fff == 1:  # PACKET_HDR: packet id first
                        held.append((now + ms / 1000, struct.unpack_from('!I', data, a + 4)[0]))
                    a += (alen + 3) & ~3
            elif typ == 2 and struct.unpack_from('=i', data, off + 16)[0]:  # NLMSG_ERROR
                print('netlink error', struct.unpack_from('=i', data, off + 16)[0], flush=True)
                sys.exit(1)
            off += (ln + 3) & ~3
    now = time.monotonic()
    while held and held[0][0] <= now:
        s.send(msg(1, [(2, struct.pack('!II', 1, held.pop(0)[1]))]))  # VERDICT: NF_ACCEPT
`

export interface PeerEvent {
  ev: 'ready' | 'sent' | 'recv' | 'tcp' | 'error'
  /** recv: the sender's address and port as this host sees them, the port it arrived on, the payload. */
  from?: string
  port?: number
  on?: number
  data?: string
  /** tcp: the token of the connect command and whether it connected. */
  token?: string
  ok?: boolean
  ports?: number[]
  /** Seconds (time.monotonic()) when python saw it. */
  t?: number
}

/**
 * The python3 probe: binds UDP ports (argv[1], comma list; 0 = any) and TCP listeners (argv[2]); with
 * argv[3] == 'echo' it answers every datagram with "seen <ip>:<port> <payload>" and every TCP connection
 * with "seen <ip>:<port>". Commands on stdin: `send <fromPort> <ip> <port> <text>`, `tcp <token> <ip> <port>`.
 * It exits when stdin closes.
 */
const PEER_PY = `
import json, select, socket, sys, time
udp_ports = [int(p) for p in sys.argv[1].split(',') if p]
tcp_ports = [int(p) for p in sys.argv[2].split(',') if p]
echo = sys.argv[3] == 'echo'
def out(o):
    o['t'] = time.monotonic()
    sys.stdout.write(json.dumps(o) + '\\n')
    sys.stdout.flush()
udp = {}
for p in udp_ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('0.0.0.0', p))
    udp[s.getsockname()[1]] = s
tcp = []
for p in tcp_ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', p))
    s.listen(16)
    tcp.append(s)
first = next(iter(udp)) if udp else 0
out({'ev': 'ready', 'ports': list(udp)})
buf = b''
while True:
    r, _, _ = select.select([sys.stdin.buffer] + list(udp.values()) + tcp, [], [])
    for s in r:
        if s is sys.stdin.buffer:
            chunk = sys.stdin.buffer.raw.read(4096)
            if not chunk:
                sys.exit(0)
            buf += chunk
            while b'\\n' in buf:
                line, buf = buf.split(b'\\n', 1)
                w = line.decode().split(' ', 4)
                try:
                    if w[0] == 'send':
                        udp[int(w[1]) or first].sendto(w[4].encode(), (w[2], int(w[3])))
                        out({'ev': 'sent', 'data': w[4]})
                    elif w[0] == 'tcp':
                        c = socket.create_connection((w[2], int(w[3])), timeout=2)
                        c.settimeout(2)
                        d = c.recv(200).decode()
                        c.close()
                        out({'ev': 'tcp', 'token': w[1], 'ok': True, 'data': d})
                except OSError as e:
                    out({'ev': 'tcp' if w[0] == 'tcp' else 'error', 'token': w[1], 'ok': False, 'data': str(e)})
        elif s in tcp:
            c, a = s.accept()
            c.sendall(('seen %s:%d' % a).encode())
            c.close()
        else:
            d, a = s.recvfrom(65535)
            on = s.getsockname()[1]
            out({'ev': 'recv', 'from': a[0], 'port': a[1], 'on': on, 'data': d.decode(errors='replace')})
            if echo:
                s.sendto(('seen %s:%d ' % a).encode() + d, a)
`

let tokens = 0

/** A python3 UDP (and TCP) endpoint inside a namespace; ended by PID at the lab's teardown or by stop(). */
export class UdpPeer {
  readonly events: PeerEvent[] = []
  private waiters: Array<{ pred: (e: PeerEvent) => boolean; resolve: (e: PeerEvent) => void }> = []
  private stderr = ''
  /** The UDP ports it bound (the first is the default source). */
  ports: number[] = []

  private constructor(
    readonly ns: string,
    readonly proc: ChildProcess,
  ) {
    let buf = ''
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const e = JSON.parse(buf.slice(0, i)) as PeerEvent
        buf = buf.slice(i + 1)
        this.events.push(e)
        this.waiters = this.waiters.filter((w) => (w.pred(e) ? (w.resolve(e), false) : true))
      }
    })
    proc.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString()
    })
  }

  /** Starts the probe in `ns` bound to the UDP ports `udp` (0 = any) and listening on TCP `tcp`; `echo` makes it answer. */
  static async start(lab: Lab, ns: string, opts: { udp: number[]; tcp?: number[]; echo?: boolean }): Promise<UdpPeer> {
    const p = spawn(
      'ip',
      ['netns', 'exec', ns, 'python3', '-u', '-c', PEER_PY, opts.udp.join(','), (opts.tcp ?? []).join(','), opts.echo ? 'echo' : '-'],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    )
    lab.net.procs.push(p) // ended by PID at teardown
    const peer = new UdpPeer(ns, p)
    const ready = await peer.waitFor((e) => e.ev === 'ready', 5000)
    if (!ready) throw new Error(`the UDP probe in ${ns} did not start: ${peer.stderr.trim()}`)
    peer.ports = ready.ports ?? []
    return peer
  }

  /** Resolves with the first event (past or future) matching `pred`, or undefined after `timeoutMs`. */
  waitFor(pred: (e: PeerEvent) => boolean, timeoutMs = 2000): Promise<PeerEvent | undefined> {
    const seen = this.events.find(pred)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve) => {
      const w = {
        pred,
        resolve: (e: PeerEvent) => {
          clearTimeout(timer)
          resolve(e)
        },
      }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w)
        resolve(undefined)
      }, timeoutMs)
      this.waiters.push(w)
    })
  }

  /** Sends one datagram `text` (no spaces needed; may hold them) to ip:port from the bound port `fromPort` (default: the first). */
  send(ip: string, port: number, text: string, fromPort = 0): void {
    this.proc.stdin?.write(`send ${fromPort} ${ip} ${port} ${text}\n`)
  }

  /** Datagrams received from `ip` (any port), optionally only those carrying `text`. */
  received(ip: string, text?: string): PeerEvent[] {
    return this.events.filter((e) => e.ev === 'recv' && e.from === ip && (text === undefined || e.data === text))
  }

  /**
   * Asks an echoing peer at ip:port how it sees us: the public address and port it observed, and the
   * round trip in ms as python measured it; undefined when no answer came within `timeoutMs`.
   */
  async observe(
    ip: string,
    port: number,
    fromPort = 0,
    timeoutMs = 2000,
  ): Promise<{ addr: string; port: number; rttMs: number } | undefined> {
    const token = `probe-${process.pid}-${tokens++}`
    this.send(ip, port, token, fromPort)
    const e = await this.waitFor((x) => x.ev === 'recv' && x.from === ip && x.port === port && !!x.data?.endsWith(` ${token}`), timeoutMs)
    const sent = this.events.find((x) => x.ev === 'sent' && x.data === token)
    const m = e?.data?.match(/^seen ([0-9.]+):(\d+) /)
    if (!e || !m || !sent) return undefined
    return { addr: m[1], port: Number(m[2]), rttMs: ((e.t ?? 0) - (sent.t ?? 0)) * 1000 }
  }

  /** Connects over TCP to ip:port (2 s timeout); the echoing side's answer, or undefined when it failed. */
  async tcpConnect(ip: string, port: number): Promise<string | undefined> {
    const token = `tcp-${process.pid}-${tokens++}`
    this.proc.stdin?.write(`tcp ${token} ${ip} ${port}\n`)
    const e = await this.waitFor((x) => x.ev === 'tcp' && x.token === token, 5000)
    return e?.ok ? e.data : undefined
  }

  /** Ends the probe by its PID. */
  stop(): void {
    this.proc.stdin?.end()
    if (this.proc.pid && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
  }
}
