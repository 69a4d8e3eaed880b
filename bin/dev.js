#!/usr/bin/env -S node --import=tsx
// Runs the CLI straight from src/ (no build step). Commands that start workers still need `npm run build`.
import { execute } from '@oclif/core'

await execute({ development: true, dir: import.meta.url })
