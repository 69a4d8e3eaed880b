import fs from 'node:fs'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag } from '../base-command.js'
import { UNIT_NAME, unitFile } from '../ops/service.js'
import { run } from '../platform/linux/exec.js'

export default class InstallService extends BaseCommand {
  static override summary = 'Write the systemd unit for the agent (then: systemctl enable --now enclave)'
  static override examples = ['$ sudo <%= config.bin %> install-service && sudo systemctl enable --now enclave']
  static override flags = {
    ...configDirFlag,
    'unit-dir': Flags.string({ description: 'where to write the unit', default: '/etc/systemd/system' }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(InstallService)
    const file = path.join(flags['unit-dir'], `${UNIT_NAME}.service`)
    fs.mkdirSync(flags['unit-dir'], { recursive: true })
    const tmp = `${file}.tmp`
    fs.writeFileSync(tmp, unitFile({ configDir: this.configDirectory(flags) }), { mode: 0o644 })
    fs.renameSync(tmp, file)
    this.log(`Wrote ${file}`)
    if (fs.existsSync('/run/systemd/system') && flags['unit-dir'] === '/etc/systemd/system') {
      await run('systemctl', ['daemon-reload'])
      this.log('Run `sudo systemctl enable --now enclave` to start it now and at boot.')
    }
  }
}
