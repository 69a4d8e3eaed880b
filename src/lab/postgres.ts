/**
 * A real PostgreSQL for tests and benchmarks: Debian's postgresql-15 (any installed major), `initdb` as the `postgres`
 * user in a temporary directory, listening on a Unix socket in that directory only (no TCP at all), with
 * fsync off (the OS keeps what a stopped server wrote; tests never crash the OS) but commits synchronous,
 * so that an immediate stop, which tests use as a crash, loses no committed transaction. `stop()` stops that server by its own data directory (pg_ctl reads the postmaster's PID
 * from it) and removes the directory. Needs root (to run as `postgres`); otherwise a skip reason.
 */
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'

const run = promisify(execFile)

export function postgresBin(): string | null {
  const base = '/usr/lib/postgresql'
  if (!fs.existsSync(base)) return null
  const majors = fs
    .readdirSync(base)
    .filter((d) => fs.existsSync(path.join(base, d, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a))
  return majors.length ? path.join(base, majors[0], 'bin') : null
}

export function postgresSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'PostgreSQL tests run as root (initdb runs as the postgres user)'
  if (!postgresBin()) return 'PostgreSQL is not installed (apt-get install postgresql-15)'
  try {
    fs.accessSync('/usr/sbin/runuser', fs.constants.X_OK)
  } catch {
    return 'runuser is missing'
  }
  return false
}

export interface TestPostgres {
  /** The server's socket directory. */
  socketDir: string
  /** A URL for a database of this server (created on demand by `database`). */
  url(db?: string): string
  /** Creates a fresh database and returns its URL. */
  database(name: string): Promise<string>
  /** Stops the server immediately (as a crash would) and starts it again on the same data. */
  restart(): Promise<void>
  /** Stops it immediately (as a crash would); startServer starts it again on the same data. */
  stopServer(): Promise<void>
  startServer(): Promise<void>
  stop(): Promise<void>
  pid(): number
}

export async function startPostgres(prefix = 'enclave-pg'): Promise<TestPostgres> {
  const bin = postgresBin()
  if (!bin) throw new Error('no PostgreSQL installed')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-${process.pid}-`))
  const data = path.join(dir, 'data')
  const sock = path.join(dir, 'sock')
  fs.mkdirSync(sock)
  await run('chown', ['-R', 'postgres:postgres', dir])
  fs.chmodSync(dir, 0o755)
  const asPg = (cmd: string, args: string[]) =>
    run('/usr/sbin/runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args], { timeout: 60_000 })
  await asPg('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--no-instructions'])
  const opts = `-k ${sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=200`
  const start = () => asPg('pg_ctl', ['-D', data, '-l', path.join(dir, 'log'), '-o', opts, '-w', '-t', '30', 'start'])
  await start()
  // A test process that dies before its teardown (an exception while importing a test file) still stops
  // its server: 'exit' handlers run then, synchronously.
  const stopOnExit = () => {
    try {
      execFileSync('/usr/sbin/runuser', ['-u', 'postgres', '--', path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop'], {
        stdio: 'ignore',
        timeout: 20_000,
      })
    } catch {
      // already stopped
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', stopOnExit)
  const url = (db = 'postgres') => `postgresql://postgres@/${db}?host=${encodeURIComponent(sock)}`
  let stopped = false
  return {
    socketDir: sock,
    url,
    async database(name: string) {
      const c = new pg.Client({ connectionString: url() })
      await c.connect()
      try {
        await c.query(`create database "${name.replace(/"/g, '')}"`)
      } finally {
        await c.end()
      }
      return url(name)
    },
    async restart() {
      await asPg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'])
      await start()
    },
    async stopServer() {
      await asPg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'])
    },
    async startServer() {
      await start()
    },
    pid() {
      return Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
    },
    async stop() {
      if (stopped) return
      stopped = true
      process.removeListener('exit', stopOnExit)
      await asPg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}
