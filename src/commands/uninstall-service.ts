import fs from 'node:fs'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { BaseCommand } from '../base-command.js'
import { UNIT_NAME } from '../ops/service.js'
import { run } from '../platform/linux/exec.js'

export default class UninstallService extends BaseCommand {
  static override summary = 'Stop, disable and remove the systemd unit'
  static override examples = ['$ sudo <%= config.bin %> uninstall-service']
  static override flags = {
    'unit-dir': Flags.string({ description: 'where the unit is', default: '/etc/systemd/system' }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(UninstallService)
    const file = path.join(flags['unit-dir'], `${UNIT_NAME}.service`)
    if (fs.existsSync('/run/systemd/system') && flags['unit-dir'] === '/etc/systemd/system')
      await run('systemctl', ['disable', '--now', UNIT_NAME])
    if (!fs.existsSync(file)) {
      this.log(`No unit at ${file}`)
      return
    }
    fs.rmSync(file)
    if (fs.existsSync('/run/systemd/system') && flags['unit-dir'] === '/etc/systemd/system') await run('systemctl', ['daemon-reload'])
    this.log(`Removed ${file}`)
  }
}
