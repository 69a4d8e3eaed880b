import { Args } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'

export default class Debug extends BaseCommand {
  static override summary = 'Test hooks of a running agent started with ENCLAVE_TEST_HOOKS=1'
  static override hidden = true
  static override args = {
    action: Args.string({ required: true, options: ['crash-worker'] }),
    arg: Args.string({ required: false }),
  }
  static override flags = { ...runDirFlag }

  async run() {
    const { args } = await this.parse(Debug)
    const r = await callAgent({ op: 'debug', action: args.action, arg: args.arg })
    this.log(JSON.stringify(r))
  }
}
