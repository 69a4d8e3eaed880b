#!/usr/bin/env node
// After `npm ci`: rebuild tap with the plugins configured in package.json (tsx loader instead of
// tap's ts-node plugin), so the first test run already uses them. Skipped when tap is not installed
// (production installs without dev dependencies).
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

if (!existsSync('node_modules/tap/dist/esm/run.mjs')) process.exit(0)
const r = spawnSync(process.execPath, ['node_modules/tap/dist/esm/run.mjs', 'build'], { stdio: 'inherit' })
process.exit(r.status ?? 1)
