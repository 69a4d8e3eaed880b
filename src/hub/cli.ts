/**
 * What every `enclave hub …` command shares: --data-dir (the hub's directory; default
 * /var/lib/enclave-hub or $ENCLAVE_HUB_DIR) and the store opened for one change, closed after it.
 * Admin commands write the database directly, so they need the hub's user or root (the directory is
 * 0700); a running `enclave hub serve` follows the database and pushes the change within ~100 ms.
 *
 * With --hub-api <url> (or $ENCLAVE_HUB_API) the same commands go through the hub's admin API instead
 * (src/hub/remote.ts), with the token from $ENCLAVE_HUB_TOKEN or the first line of stdin (--token-stdin),
 * never from a flag (flags end up in shell history and `ps`). An explicit --data-dir wins over
 * $ENCLAVE_HUB_API; --data-dir and --hub-api together are refused.
 */
import fs from 'node:fs'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { EnclaveError } from '../errors.js'
import { HubAdmin } from './admin.js'
import { HubAuth } from './auth.js'
import { type HubConfig, hubPaths, openHubStore } from './hub.js'
import { DEFAULT_PORTAL_LISTEN } from './portal/server.js'
import { type HubAdminApi, type HubTokensApi, RemoteAdmin, apiBase } from './remote.js'
import { readSecretLine } from './secret-input.js'
import type { HubStore } from './store.js'

export const DEFAULT_HUB_DIR = '/var/lib/enclave-hub'

export function hubDir(flag?: string): string {
  return path.resolve(flag || process.env.ENCLAVE_HUB_DIR || DEFAULT_HUB_DIR)
}

export const dataDirFlag = {
  'data-dir': Flags.string({ description: 'the hub directory (default /var/lib/enclave-hub, or $ENCLAVE_HUB_DIR)', helpGroup: 'GLOBAL' }),
}

/** The flags of every command that reads or changes the hub's data: locally or through its API. */
export const hubFlags = {
  'data-dir': Flags.string({
    description: 'the hub directory (default /var/lib/enclave-hub, or $ENCLAVE_HUB_DIR)',
    helpGroup: 'GLOBAL',
    exclusive: ['hub-api'],
  }),
  'hub-api': Flags.string({
    description:
      'administer a hub from elsewhere through its admin API, e.g. https://hub.example.com (or $ENCLAVE_HUB_API); the token comes from $ENCLAVE_HUB_TOKEN',
    helpGroup: 'GLOBAL',
  }),
  'token-stdin': Flags.boolean({
    description: 'with --hub-api: read the API token from the first line of stdin instead of $ENCLAVE_HUB_TOKEN',
    helpGroup: 'GLOBAL',
  }),
}

export interface HubFlags {
  'data-dir'?: string
  'hub-api'?: string
  'token-stdin'?: boolean
}

/** What a command works with: the admin methods, API tokens, and where (for messages). */
export interface HubContext {
  tokens: HubTokensApi
  /** The API's base URL in remote mode. */
  remote?: string
  /** The hub directory in local mode. */
  dir?: string
}

/** Warnings already printed in this process (one per URL). */
const warned = new Set<string>()

/** The remote client when --hub-api or $ENCLAVE_HUB_API says so (an explicit --data-dir wins over the variable). */
async function remoteFor(f: HubFlags): Promise<RemoteAdmin | null> {
  const url = f['hub-api'] || (f['data-dir'] ? undefined : process.env.ENCLAVE_HUB_API)
  if (!url) {
    if (f['token-stdin']) throw new EnclaveError('EUSAGE', '--token-stdin goes with --hub-api <url> (or $ENCLAVE_HUB_API)', 2)
    return null
  }
  const { warning } = apiBase(url)
  if (warning && !warned.has(url)) {
    warned.add(url)
    process.stderr.write(`${warning}\n`)
  }
  const token = f['token-stdin'] ? await readSecretLine('API token: ') : process.env.ENCLAVE_HUB_TOKEN
  return new RemoteAdmin({ url, token: token ?? '' })
}

/** Opens the hub's database for one change (root or the hub's user), closed after it. */
export async function withLocalHub<T>(
  dataDir: string | undefined,
  fn: (store: HubStore, actor: string, dir: string) => Promise<T>,
): Promise<T> {
  const dir = hubDir(dataDir)
  try {
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOENT')
      throw new EnclaveError('ENOHUB', `no hub in ${dir}: run \`enclave hub init --data-dir ${dir} --listen <ip:port>\` first`)
    throw new EnclaveError('EACCES', `cannot use the hub in ${dir}: hub administration needs root or the hub's user`)
  }
  const store = await openHubStore(dir)
  try {
    return await fn(store, cliActor(), dir)
  } finally {
    await store.close()
  }
}

/** Who acts in the audit log for a command run on the hub host. */
export function cliActor(): string {
  return `${process.env.SUDO_USER || process.env.USER || `uid ${process.getuid?.()}`}@cli`
}

/**
 * Runs `fn` with the hub's data: directly (the database in --data-dir), or through the admin API when
 * --hub-api or $ENCLAVE_HUB_API is set. The commands do not know which.
 */
export async function withHub<T>(
  flags: HubFlags | string | undefined,
  fn: (admin: HubAdminApi, ctx: HubContext) => Promise<T>,
): Promise<T> {
  const f: HubFlags = typeof flags === 'object' ? flags : { 'data-dir': flags }
  const remote = await remoteFor(f)
  if (remote) return fn(remote, { tokens: remote, remote: remote.base })
  return withLocalHub(f['data-dir'], (store, actor, dir) => {
    const auth = new HubAuth(store)
    const tokens: HubTokensApi = {
      createToken: (description, o) => auth.createToken(actor, description, o),
      listTokens: () => auth.listTokens(),
      revokeToken: (which) => auth.revokeToken(actor, which),
    }
    return fn(new HubAdmin(store, actor), { tokens, dir })
  })
}

/** The portal's URL from a listen address (a wildcard address becomes a placeholder), or null when "off". */
export function portalUrlOf(listen: string): string | null {
  if (listen.trim() === 'off') return null
  const i = listen.lastIndexOf(':')
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '')
  const port = listen.slice(i + 1)
  if (host === '' || host === '0.0.0.0' || host === '::') return `http://<this host>:${port}`
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`
}

/** The portal's URL of the hub in `dir` (hub.json Portal.Listen, default 127.0.0.1:8444), or null when off. */
export function portalUrl(dir: string): string | null {
  let cfg: Partial<HubConfig> = {}
  try {
    cfg = JSON.parse(fs.readFileSync(hubPaths(dir).config, 'utf8'))
  } catch {
    // no readable hub.json: the default
  }
  return portalUrlOf(cfg.Portal?.Listen ?? DEFAULT_PORTAL_LISTEN)
}
