/**
 * Network namespaces made by this process (the demo, tests, benchmarks): named with a prefix and the
 * pid, joined by veth pairs, and deleted on teardown together with every process inside them.
 * Nothing here touches a namespace it did not create.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

export interface ExecOut {
  code: number
  stdout: string
  stderr: string
}

let vethCounter = 0

export class NetnsSet {
  readonly namespaces: string[] = []
  readonly procs: ChildProcess[] = []
  private torn = false

  constructor(readonly prefix: string) {}

  name(n: string): string {
    return `${this.prefix}-${n}`
  }

  /** Runs a host command; rejects with its stderr. */
  sh(cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`)) : resolve(String(stdout)),
      )
    })
  }

  async add(n: string): Promise<string> {
    const ns = this.name(n)
    await this.sh('ip', ['netns', 'add', ns])
    this.namespaces.push(ns)
    await this.sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    return ns
  }

  /** A veth pair between two namespaces, with addresses (a.b.c.d/len, or '' for none), brought up. */
  async link(nsA: string, ifA: string, addrA: string, nsB: string, ifB: string, addrB: string): Promise<void> {
    const tmpA = `v${process.pid % 100000}x${vethCounter++}a`
    const tmpB = tmpA.replace(/a$/, 'b')
    await this.sh('ip', ['link', 'add', tmpA, 'type', 'veth', 'peer', 'name', tmpB])
    await this.sh('ip', ['link', 'set', tmpA, 'netns', nsA, 'name', ifA])
    await this.sh('ip', ['link', 'set', tmpB, 'netns', nsB, 'name', ifB])
    for (const [ns, dev, addr] of [
      [nsA, ifA, addrA],
      [nsB, ifB, addrB],
    ]) {
      if (addr) await this.sh('ip', ['-n', ns, 'addr', 'add', addr, 'dev', dev])
      await this.sh('ip', ['-n', ns, 'link', 'set', dev, 'up'])
    }
  }

  /**
   * Gives processes started in `ns` their own /etc/hosts (ip netns exec bind-mounts
   * /etc/netns/<ns>/hosts over /etc/hosts). Written in place, so running processes see changes.
   */
  writeHosts(ns: string, content: string): void {
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not one of ours`)
    fs.mkdirSync(path.join('/etc/netns', ns), { recursive: true })
    fs.writeFileSync(path.join('/etc/netns', ns, 'hosts'), content)
  }

  /** Runs a command inside a namespace and collects its output (never rejects). */
  exec(ns: string, cmd: string, args: string[], timeoutMs = 30_000, env?: Record<string, string>): Promise<ExecOut> {
    return new Promise((resolve) => {
      execFile(
        'ip',
        ['netns', 'exec', ns, cmd, ...args],
        { timeout: timeoutMs, maxBuffer: 32 << 20, env: { ...process.env, ...env } },
        (err, stdout, stderr) => {
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout: String(stdout), stderr: String(stderr) })
        },
      )
    })
  }

  /** Starts a long-running command inside a namespace; it is ended by PID at teardown. */
  spawn(ns: string, cmd: string, args: string[], env?: Record<string, string>): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    this.procs.push(p)
    return p
  }

  /** Ends our processes (by PID), then every process left in our namespaces, then deletes them. */
  teardownSync(): void {
    if (this.torn) return
    this.torn = true
    for (const p of this.procs) {
      if (p.pid && p.exitCode === null && p.signalCode === null)
        try {
          process.kill(p.pid, 'SIGKILL')
        } catch {
          /* already gone */
        }
    }
    for (const ns of this.namespaces) {
      try {
        for (const pid of execFileSync('ip', ['netns', 'pids', ns]).toString().split(/\s+/).filter(Boolean))
          try {
            process.kill(Number(pid), 'SIGKILL')
          } catch {
            /* gone */
          }
      } catch {
        /* namespace already gone */
      }
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
      } catch {
        /* gone */
      }
      fs.rmSync(path.join('/etc/netns', ns), { recursive: true, force: true })
    }
  }
}
