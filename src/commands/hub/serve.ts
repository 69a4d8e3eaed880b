import { Flags } from '@oclif/core'
import { BaseCommand } from '../../base-command.js'
import { dataDirFlag, hubDir } from '../../hub/cli.js'
import { HubServer } from '../../hub/hub.js'
import { createLogger, parseLogLevel, LOG_LEVELS_TEXT } from '../../log/logger.js'
import { EnclaveError } from '../../errors.js'

export default class HubServe extends BaseCommand {
  static override summary = 'Run the hub in the foreground (agents connect to it; admin commands change its database)'
  static override description = 'Needs no root and no TUN: run it as its own user. Stops on SIGINT or SIGTERM.'
  static override examples = ['$ <%= config.bin %> hub serve --data-dir /var/lib/enclave-hub']
  static override flags = {
    ...dataDirFlag,
    listen: Flags.string({ description: "address:port to listen on instead of hub.json's Listen" }),
    portal: Flags.string({
      description: "address:port of the portal and admin API instead of hub.json's Portal.Listen (default 127.0.0.1:8444; off: none)",
    }),
    verbosity: Flags.string({ char: 'v', description: `log level: ${LOG_LEVELS_TEXT}`, default: '1' }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(HubServe)
    const level = parseLogLevel(flags.verbosity)
    if (level === undefined) throw new EnclaveError('EUSAGE', `-v ${flags.verbosity}: use ${LOG_LEVELS_TEXT}`, 2)
    const log = createLogger(level)
    const hub = new HubServer({ dataDir: hubDir(flags['data-dir']), listen: flags.listen, portal: flags.portal, log })
    await hub.start()
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    log.info('hub stopping')
    await hub.stop()
  }
}
