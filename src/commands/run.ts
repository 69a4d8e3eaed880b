import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { Agent } from '../agent/agent.js'
import { sdNotify } from '../agent/sd-notify.js'
import { LOG_LEVELS_TEXT, parseLogLevel } from '../common/log-levels.js'
import { runDir } from '../config/profile.js'

export default class Run extends BaseCommand {
  static override summary = 'Run the agent in the foreground (Ctrl-C stops it and removes everything it added)'
  static override examples = ['$ sudo <%= config.bin %> run', '$ sudo <%= config.bin %> run -v 5   # log every traffic flow']
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    verbosity: Flags.string({
      char: 'v',
      description: `log level, beating the profile's LogLevel: ${LOG_LEVELS_TEXT} (default: the profile's, else 1)`,
      parse: async (s) => {
        const level = parseLogLevel(s)
        if (level === undefined) throw new Error(`-v ${s}: not a log level; use 0-5 or a name: ${LOG_LEVELS_TEXT}`)
        return String(level)
      },
    }),
    'log-format': Flags.string({ description: 'log line format', options: ['logfmt', 'json'], default: 'logfmt' }),
    workers: Flags.integer({ description: 'data-plane worker threads (default: one per core, at most 4)', min: 1, max: 64 }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(Run)
    const agent = new Agent({
      configDir: this.configDirectory(flags),
      runDir: runDir(),
      verbosity: flags.verbosity === undefined ? undefined : Number(flags.verbosity),
      logFormat: flags['log-format'] as 'logfmt' | 'json',
      workers: flags.workers,
    })
    const onSignal = (sig: string) => {
      sdNotify('STOPPING=1')
      void agent.stop(`signal ${sig}`)
    }
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
    process.on('SIGHUP', () => {
      agent.reload().catch(() => undefined) // the agent logs a refused reload itself
    })
    try {
      await agent.start() // a failed start has already undone what it acquired
    } catch (e) {
      if ((e as { code?: string }).code !== 'ESTOPPED') throw e
      await agent.stopped // a signal during the start: stopped cleanly, nothing to report
      process.exit(0)
    }
    sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=data plane up, control socket ready`)
    await agent.stopped
    // 1 when the agent stopped on its own (TUN device lost, workers crashing): systemd restarts it.
    process.exit(agent.exitCode)
  }
}
