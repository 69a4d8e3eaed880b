/**
 * Starting a worker thread of workers/<name>: the compiled .js next to the compiled agent, or, when the
 * agent itself runs from its TypeScript source (tests under tsx), the .ts source imported from a small
 * bootstrap so that the loader the worker inherits (execArgv) compiles it.
 */
import fs from 'node:fs'
import { Worker, type WorkerOptions } from 'node:worker_threads'

export function workerFile(name: string): URL {
  const js = new URL(`../../workers/${name}.js`, import.meta.url)
  if (fs.existsSync(js)) return js
  const ts = new URL(`../../workers/${name}.ts`, import.meta.url)
  return fs.existsSync(ts) ? ts : js
}

export function startWorker(name: string, opts: WorkerOptions): Worker {
  const file = workerFile(name)
  if (!file.pathname.endsWith('.ts')) return new Worker(file, opts)
  // tsx's hooks are per thread: register them in the worker, then import the source.
  const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(file.href)}) })`
  return new Worker(boot, { ...opts, eval: true, execArgv: sourceExecArgv() })
}

/**
 * Node options for a worker of an agent running from source: the parent's, less the preloads of a test
 * runner (they would run again in every worker and write to the shared stdout).
 */
export function sourceExecArgv(): string[] {
  return process.execArgv.filter((a) => !/^--import=.*@tapjs/.test(a) && a !== '--import=tsx')
}
