/** A mistyped command suggests the nearest one: `enclave stauts` -> did you mean `enclave status`? */
import type { Hook } from '@oclif/core'
import { editDistance } from '../config/known-keys.js'

const hook: Hook<'command_not_found'> = async function (opts) {
  const typed = opts.id.replace(/:/g, ' ')
  const visible = opts.config.commands.filter((c) => !c.hidden).map((c) => c.id.replace(/:/g, ' '))
  let best: string | undefined
  let bestD = Math.max(2, Math.floor(typed.length / 3)) + 1
  for (const id of visible) {
    const d = editDistance(typed, id)
    if (d < bestD) {
      best = id
      bestD = d
    }
  }
  this.error(`"${typed}" is not an enclave command${best ? `; did you mean \`enclave ${best}\`?` : ''} (see \`enclave --help\`)`, {
    exit: 2,
  })
}

export default hook
