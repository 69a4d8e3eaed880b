import { Flags } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { Demo } from '../demo/demo.js'
import { HubDemo } from '../demo/hub-demo.js'

export default class DemoCmd extends BaseCommand {
  static override summary =
    'Run the exit-node guide live in network namespaces (laptop -> exit node -> printer; --hub: with a hub), then clean up'
  static override examples = ['$ sudo <%= config.bin %> demo', '$ sudo <%= config.bin %> demo --hub', '$ sudo npm run demo']
  static override flags = {
    pause: Flags.integer({ description: 'milliseconds to pause between steps', default: 0, min: 0 }),
    hub: Flags.boolean({
      description:
        'the same guide with a hub: enrol with keys, approve, a central policy and route; nothing configured by hand on the laptop',
      default: false,
    }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(DemoCmd)
    if (process.getuid?.() !== 0)
      throw new EnclaveError('EPERM', 'the demo creates network namespaces and TUN devices: run it as root (sudo npm run demo)')
    const opts = { out: (s: string) => this.log(s), pauseMs: flags.pause }
    const demo = flags.hub ? new HubDemo(opts) : new Demo(opts)
    try {
      await demo.run()
    } finally {
      demo.teardownSync()
      this.log('\nCleaned up: agents stopped, namespaces deleted, nothing left behind.')
    }
  }
}
