/**
 * Shared behaviour of every enclave command: the --config-dir flag (also ENCLAVE_CONFIG_DIR),
 * and errors printed as one clear message with a non-zero exit; a stack only with DEBUG set.
 */
import { Command, Flags, Errors } from '@oclif/core'
import { EnclaveError } from './errors.js'
import { configDir, profilePath } from './control/profile/profile.js'

export abstract class BaseCommand extends Command {
  static override baseFlags = {
    'config-dir': Flags.string({
      description: 'configuration directory (default /etc/enclave, or $ENCLAVE_CONFIG_DIR)',
      helpGroup: 'GLOBAL',
    }),
  }

  protected configDirectory(flags: { 'config-dir'?: string }): string {
    return configDir(flags['config-dir'])
  }

  protected profileFile(flags: { 'config-dir'?: string }): string {
    return profilePath(this.configDirectory(flags))
  }

  protected override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    if (err instanceof EnclaveError) {
      if (process.env.DEBUG) this.logToStderr(err.stack ?? String(err))
      this.logToStderr(`Error: ${err.message}`)
      this.exit(err.exitCode)
    }
    if (err instanceof Errors.CLIError || (err as { oclif?: unknown }).oclif) return super.catch(err)
    const e = err as NodeJS.ErrnoException
    if (process.env.DEBUG) this.logToStderr(e.stack ?? String(e))
    this.logToStderr(`Error: ${e.message}`)
    this.exit(1)
  }
}
