/** oclif's help, followed by the exit codes every command uses. */
import { type Command, type Config, Help, type Interfaces } from '@oclif/core'
import { EXIT_CODES_HELP } from './base-command.js'

export default class EnclaveHelp extends Help {
  constructor(config: Config, opts: Partial<Interfaces.HelpOptions> = {}) {
    // The summary heads the help already: do not repeat it under DESCRIPTION.
    super(config, { ...opts, hideCommandSummaryInDescription: true })
  }

  protected override async showRootHelp(): Promise<void> {
    await super.showRootHelp()
    this.log(`${EXIT_CODES_HELP}.`)
  }

  override async showCommandHelp(command: Command.Loadable): Promise<void> {
    await super.showCommandHelp(command)
    this.log(`${EXIT_CODES_HELP}.`)
  }
}
