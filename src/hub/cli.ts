/**
 * What every `enclave hub …` command shares: --data-dir (the hub's directory; default
 * /var/lib/enclave-hub or $ENCLAVE_HUB_DIR) and the store opened for one change, closed after it.
 * Admin commands write the database directly, so they need the hub's user or root (the directory is
 * 0700); a running `enclave hub serve` follows the database and pushes the change within ~100 ms.
 */
import fs from 'node:fs'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { EnclaveError } from '../errors.js'
import { HubAdmin } from './admin.js'
import { openHubStore } from './hub.js'

export const DEFAULT_HUB_DIR = '/var/lib/enclave-hub'

export function hubDir(flag?: string): string {
  return path.resolve(flag || process.env.ENCLAVE_HUB_DIR || DEFAULT_HUB_DIR)
}

export const dataDirFlag = {
  'data-dir': Flags.string({ description: 'the hub directory (default /var/lib/enclave-hub, or $ENCLAVE_HUB_DIR)', helpGroup: 'GLOBAL' }),
}

/** Runs `fn` with the hub's data, as the current user (root or the hub's user). */
export async function withHub<T>(dataDir: string | undefined, fn: (admin: HubAdmin) => Promise<T>): Promise<T> {
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
    const actor = `${process.env.SUDO_USER || process.env.USER || `uid ${process.getuid?.()}`}@cli`
    return await fn(new HubAdmin(store, actor))
  } finally {
    await store.close()
  }
}
