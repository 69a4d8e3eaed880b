/**
 * HTML for the portal's server-rendered pages: a tagged template that escapes every interpolated value
 * unless it is already Html (built by this template or `raw`). No page needs JavaScript; the CSP
 * forbids scripts altogether.
 */
export class Html {
  constructor(readonly s: string) {}
  toString(): string {
    return this.s
  }
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(v: unknown): string {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c])
}

/** Already safe markup (only for constant strings of this codebase). */
export function raw(s: string): Html {
  return new Html(s)
}

function part(v: unknown): string {
  if (v instanceof Html) return v.s
  if (Array.isArray(v)) return v.map(part).join('')
  if (v === null || v === undefined || v === false) return ''
  return escapeHtml(v)
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1]
  return new Html(out)
}

/** The hidden CSRF field every form carries. */
export function csrfField(token: string): Html {
  return html`<input type="hidden" name="_csrf" value="${token}">`
}

export interface LayoutOptions {
  title: string
  /** The signed-in user (no navigation on the login page). */
  user?: { name: string; role: string; csrf: string }
  /** Which navigation entry is current. */
  nav?: string
  /** One-line messages: status after a change, or an error. */
  flash?: { kind: 'ok' | 'error'; text: string }
  pendingCount?: number
}

const NAV: Array<[string, string]> = [
  ['/systems/pending', 'Pending'],
  ['/systems', 'Systems'],
  ['/keys', 'Enrolment keys'],
  ['/tags', 'Tags'],
  ['/policies', 'Policies'],
  ['/audit', 'Audit log'],
]

export function layout(o: LayoutOptions, body: Html): Html {
  const nav = o.user
    ? html`<nav><span class="brand">Enclave hub</span>${NAV.map(
        ([href, label]) =>
          html`<a href="${href}"${o.nav === href ? raw(' aria-current="page"') : ''}>${label}${
            href === '/systems/pending' && o.pendingCount ? html` <span class="badge">${o.pendingCount}</span>` : ''
          }</a>`,
      )}<span class="who">${o.user.name} (${o.user.role})</span><form method="post" action="/logout" class="inline">${csrfField(
        o.user.csrf,
      )}<button type="submit">Log out</button></form></nav>`
    : html`<nav><span class="brand">Enclave hub</span></nav>`
  const flash = o.flash
    ? html`<p class="flash ${o.flash.kind}" role="${o.flash.kind === 'error' ? 'alert' : 'status'}">${o.flash.text}</p>`
    : ''
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${o.title} · Enclave hub</title><link rel="stylesheet" href="/static/portal.css"></head>
<body>${nav}<main><h1>${o.title}</h1>${flash}${body}</main></body></html>`
}

export const CSS = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f5f6f8}
nav{display:flex;gap:4px;align-items:center;background:#1d2330;color:#fff;padding:6px 16px;flex-wrap:wrap}
nav a{color:#cfd6e4;text-decoration:none;padding:6px 10px;border-radius:4px}
nav a[aria-current=page],nav a:hover{background:#33405a;color:#fff}
nav .brand{font-weight:600;margin-right:16px}
nav .who{margin-left:auto;margin-right:8px;color:#cfd6e4}
nav button{background:#33405a;color:#fff;border:0}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:20px;margin:8px 0 16px}
h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4;font-weight:600}
code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
pre{background:#fff;border:1px solid #d6dae1;padding:8px;overflow:auto}
input[type=text],input[type=password],input[type=number],select,textarea{padding:5px 7px;border:1px solid #b9c0cc;border-radius:4px;font:inherit;background:#fff}
textarea{width:100%;min-height:60px}
button{padding:5px 12px;border:1px solid #8a94a6;border-radius:4px;background:#fff;font:inherit;cursor:pointer}
button.primary{background:#2456c7;border-color:#2456c7;color:#fff}
button.danger{border-color:#b3261e;color:#b3261e}
form.inline{display:inline}
.flash{padding:8px 12px;border-radius:4px}
.flash.ok{background:#e4f4e6;border:1px solid #8cc495}
.flash.error{background:#fbe7e6;border:1px solid #e0928d}
.badge{background:#d9822b;color:#fff;border-radius:9px;padding:0 6px;font-size:12px}
.state-approved{color:#1d7a36}.state-pending{color:#a35d00}.state-disabled{color:#8a94a6}
.online{color:#1d7a36}.offline{color:#8a94a6}
.tag{display:inline-block;background:#e8ecf5;border-radius:3px;padding:0 6px;margin:1px}
.card{background:#fff;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:12px 0}
.grid{display:grid;grid-template-columns:max-content 1fr;gap:6px 16px;align-items:center}
.plus{color:#1d7a36}.minus{color:#b3261e}
.muted{color:#6b7385}
.nowrap{white-space:nowrap}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
dl.grid dt{font-weight:600}dl.grid dd{margin:0}
a.button{display:inline-block;padding:5px 12px;border:1px solid #2456c7;border-radius:4px;background:#2456c7;color:#fff;text-decoration:none}
.filters{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
ul.pairs{list-style:none;padding:0;margin:0}
td.details{font-size:12px;color:#6b7385;word-break:break-all}
.key-enabled{color:#1d7a36}.key-revoked,.key-expired,.key-no-uses{color:#8a94a6}
#new-key{font-size:16px;background:#fff6d6;padding:2px 6px}
form.grid{max-width:760px}
section#preview h2{margin-top:0}
td time{white-space:nowrap}
`
