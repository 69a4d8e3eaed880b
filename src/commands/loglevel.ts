import { Args } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { callAgent } from '../control/api/client.js'
import { VERBOSITY_NAMES } from '../control/logger.js'

export default class Loglevel extends BaseCommand {
  static override description = "Change the running agent's log level (0 minimal … 5 frame data)"
  static override enableJsonFlag = true
  static override args = { level: Args.integer({ description: '0..5', required: true, min: 0, max: 5 }) }

  async run() {
    const { args } = await this.parse(Loglevel)
    const r = await callAgent<{ level: number }>({ op: 'loglevel', level: args.level })
    this.log(`Log level is now ${r.level} (${VERBOSITY_NAMES[r.level]})`)
    return r
  }
}
