import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag, runDirFlag } from '../base-command.js'
import { Agent } from '../agent/agent.js'
import { sdNotify } from '../agent/sd-notify.js'
import { runDir } from '../config/profile.js'

export default class Run extends BaseCommand {
  static override summary = 'Run the agent in the foreground (Ctrl-C stops it and removes everything it added)'
  static override examples = ['$ sudo <%= config.bin %> run', '$ sudo <%= config.bin %> run -v 5   # log every traffic flow']
  static override flags = {
    ...configDirFlag,
    ...runDirFlag,
    verbosity: Flags.integer({
      char: 'v',
      description: 'log level: 0 minimal, 1 informational, 2 network events, 3 protocol events, 4 debug, 5 frame data',
      min: 0,
      max: 5,
      default: 1,
    }),
    'log-format': Flags.string({ description: 'log line format', options: ['logfmt', 'json'], default: 'logfmt' }),
    workers: Flags.integer({ description: 'data-plane worker threads (default: one per core, at most 4)', min: 1, max: 64 }),
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(Run)
    const agent = new Agent({
      configDir: this.configDirectory(flags),
      runDir: runDir(),
      verbosity: flags.verbosity,
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
    await agent.start() // a failed start has already undone what it acquired
    sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=data plane up, control socket ready`)
    await agent.stopped
    process.exit(0)
  }
}
