import { Args } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { type HubFlags, hubFlags, withHub } from './cli.js'

type Verb = 'approve' | 'decline' | 'disable' | 'enable' | 'remove'

/** `enclave hub system <verb> <identity…>`: one class per verb, the same shape. */
export function systemVerb(verb: Verb, summary: string) {
  return class extends BaseCommand {
    static override summary = summary
    static override examples = [`$ sudo <%= config.bin %> hub system ${verb} G982V`]
    static override enableJsonFlag = true
    static override strict = false
    static override args = { identity: Args.string({ description: 'system identity (several allowed)', required: true }) }
    static override flags = { ...hubFlags }

    async run() {
      const { argv, flags } = await this.parse(this.constructor as typeof BaseCommand)
      const out = await withHub(flags as HubFlags, (a) => a.setState(verb, argv as string[]))
      for (const s of out) this.log(`${s.identity}: ${s.state}`)
      return { systems: out }
    }
  }
}
