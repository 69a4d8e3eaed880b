import fs from 'node:fs'

/** The package version, read once from package.json (works from src/ and lib/src/). */
function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const p = JSON.parse(fs.readFileSync(new URL(rel, import.meta.url), 'utf8'))
      if (p.name === 'enclave') return p.version
    } catch {
      /* try the next location */
    }
  }
  return '0.0.0'
}

export const VERSION = readVersion()
