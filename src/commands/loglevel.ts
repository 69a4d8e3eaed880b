import { Args } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'
import { LOG_LEVELS_TEXT, VERBOSITY_NAMES, parseLogLevel } from '../log/logger.js'

export default class Loglevel extends BaseCommand {
  static override summary = "Change the running agent's log level"
  static override description =
    `Levels: ${LOG_LEVELS_TEXT}. A name works as well as its number (the names in parentheses are the ones log lines show). The profile's LogLevel applies again at the next start.`
  static override examples = [
    '$ sudo <%= config.bin %> loglevel 3',
    '$ sudo <%= config.bin %> loglevel debug',
    '$ sudo <%= config.bin %> loglevel network',
  ]
  static override enableJsonFlag = true
  static override args = {
    level: Args.string({
      description: '0-5 or a level name',
      required: true,
      parse: async (s) => {
        const level = parseLogLevel(s)
        if (level === undefined) throw new Error(`"${s}" is not a log level; use 0-5 or a name: ${LOG_LEVELS_TEXT}`)
        return String(level)
      },
    }),
  }
  static override flags = { ...runDirFlag }

  async run() {
    const { args } = await this.parse(Loglevel)
    const level = Number(args.level)
    const r = await callAgent<{ level: number }>({ op: 'loglevel', level })
    this.log(`Log level is now ${r.level} (${VERBOSITY_NAMES[r.level]})`)
    return r
  }
}
