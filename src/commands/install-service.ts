import fs from 'node:fs'
import path from 'node:path'
import { Flags } from '@oclif/core'
import { BaseCommand, configDirFlag } from '../base-command.js'
import { EnclaveError } from '../errors.js'
import { PACKAGE_FILES, PACKAGE_ROOT, UNIT_NAME, hiddenFromUnit, unitFile } from '../ops/service.js'
import { run } from '../platform/linux/exec.js'

export default class InstallService extends BaseCommand {
  static override summary = 'Write the systemd unit for the agent (then: systemctl daemon-reload && systemctl enable --now enclave)'
  static override description =
    'The unit is hardened (ProtectHome, PrivateTmp, ProtectSystem=strict): a program or profile under /home, /root, /tmp or /var/tmp would be invisible to it, so such paths are refused. --install-to copies the program (bin, lib, node_modules, the addon) to a directory the service can see, such as /opt/enclave, and points the unit there.'
  static override examples = [
    '$ sudo <%= config.bin %> install-service && sudo systemctl daemon-reload && sudo systemctl enable --now enclave',
    '$ sudo <%= config.bin %> install-service --install-to /opt/enclave   # the program lives under /root or /home',
  ]
  static override enableJsonFlag = true
  static override flags = {
    ...configDirFlag,
    'unit-dir': Flags.string({ description: 'where to write the unit (must exist)', default: '/etc/systemd/system' }),
    'install-to': Flags.string({ description: 'copy the program here first and run it from here (e.g. /opt/enclave)' }),
  }

  async run() {
    const { flags } = await this.parse(InstallService)
    const unitDir = flags['unit-dir']
    if (!fs.existsSync(unitDir) || !fs.statSync(unitDir).isDirectory())
      throw new EnclaveError('ENOENT', `--unit-dir ${unitDir}: no such directory (systemd reads /etc/systemd/system)`, 2)
    const configDir = path.resolve(this.configDirectory(flags))
    let root = PACKAGE_ROOT
    const problems: string[] = []
    const hiddenConfig = hiddenFromUnit(configDir)
    if (hiddenConfig) problems.push(`the profile directory ${configDir}: ${hiddenConfig}; keep the profile in /etc/enclave (--config-dir)`)
    const hiddenNode = hiddenFromUnit(process.execPath)
    if (hiddenNode) problems.push(`node at ${process.execPath}: ${hiddenNode}; install Node.js system-wide (e.g. /usr/bin/node)`)
    if (flags['install-to']) {
      const dest = path.resolve(flags['install-to'])
      const hiddenDest = hiddenFromUnit(dest)
      if (hiddenDest) problems.push(`--install-to ${dest}: ${hiddenDest}`)
      else if (!problems.length) {
        copyPackage(PACKAGE_ROOT, dest)
        this.log(`Copied the program to ${dest}`)
        root = dest
      }
    } else {
      const hiddenBin = hiddenFromUnit(PACKAGE_ROOT)
      if (hiddenBin) problems.push(`the program at ${PACKAGE_ROOT}: ${hiddenBin}; add --install-to /opt/enclave to copy it there`)
    }
    if (problems.length) throw new EnclaveError('EHIDDEN', `no unit written: the service would not see ${problems.join('; ')}`, 2)
    const file = path.join(unitDir, `${UNIT_NAME}.service`)
    const tmp = `${file}.tmp`
    fs.writeFileSync(tmp, unitFile({ configDir, binPath: path.join(root, 'bin', 'run.js') }), { mode: 0o644 })
    fs.renameSync(tmp, file)
    this.log(`Wrote ${file}`)
    let reloaded = false
    if (fs.existsSync('/run/systemd/system') && path.resolve(unitDir) === '/etc/systemd/system')
      reloaded = (await run('systemctl', ['daemon-reload'])).code === 0
    this.log(
      reloaded
        ? 'Ran `systemctl daemon-reload`. Now: sudo systemctl enable --now enclave'
        : 'Now: sudo systemctl daemon-reload && sudo systemctl enable --now enclave',
    )
    return { unit: file, program: root, configDir, daemonReloaded: reloaded }
  }
}

/** Copies what `enclave run` needs: the program files and the production dependencies (not the dev ones). */
export function copyPackage(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true, mode: 0o755 })
  for (const rel of PACKAGE_FILES) {
    if (rel === 'node_modules') continue
    const src = path.join(from, rel)
    if (!fs.existsSync(src)) throw new EnclaveError('ENOENT', `${src} is missing: build the package first (npm ci)`)
    fs.cpSync(src, path.join(to, rel), { recursive: true, verbatimSymlinks: true, force: true })
  }
  for (const dir of productionPackages(from)) {
    const rel = path.relative(from, dir)
    fs.cpSync(dir, path.join(to, rel), { recursive: true, verbatimSymlinks: true, force: true })
  }
}

/** The directories of every production dependency, found as Node resolves them (nearest node_modules up). */
export function productionPackages(root: string): string[] {
  const found = new Set<string>()
  const queue: Array<{ name: string; from: string }> = []
  const depsOf = (dir: string) => {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>
      optionalDependencies?: Record<string, string>
    }
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) queue.push({ name, from: dir })
  }
  depsOf(root)
  while (queue.length) {
    const { name, from } = queue.shift() as { name: string; from: string }
    for (let d = from; ; d = path.dirname(d)) {
      const cand = path.join(d, 'node_modules', name)
      if (fs.existsSync(path.join(cand, 'package.json'))) {
        if (!found.has(cand)) {
          found.add(cand)
          depsOf(cand)
        }
        break
      }
      if (d === path.dirname(d) || path.relative(root, d).startsWith('..')) break
    }
  }
  return [...found]
}
