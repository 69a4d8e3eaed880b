import { Args } from '@oclif/core'
import { BaseCommand, runDirFlag } from '../base-command.js'
import { callAgent } from '../api/client.js'
import { VERBOSITY_NAMES } from '../log/logger.js'

const LEVELS = VERBOSITY_NAMES.map((n, i) => `${i} ${n}`).join(', ')

export default class Loglevel extends BaseCommand {
  static override summary = "Change the running agent's log level"
  static override description =
    `Levels: ${LEVELS}. A name works as well as its number. The profile's LogLevel applies again at the next start.`
  static override examples = ['$ sudo <%= config.bin %> loglevel 3', '$ sudo <%= config.bin %> loglevel debug']
  static override enableJsonFlag = true
  static override args = {
    level: Args.string({
      description: `0-5 or a name (${VERBOSITY_NAMES.join(', ')})`,
      required: true,
      parse: async (s) => {
        const byName = VERBOSITY_NAMES.findIndex((n) => n.toLowerCase() === s.toLowerCase())
        if (byName >= 0) return String(byName)
        if (/^[0-5]$/.test(s)) return s
        throw new Error(`"${s}" is not a log level; use 0-5 or a name: ${LEVELS}`)
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
