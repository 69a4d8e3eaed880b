/** Tags (who carries each, which policies name it, which keys give it) and the audit log. */
import { html } from '../html.js'
import { tagIndex } from '../live.js'
import type { PageResult } from '../types.js'
import { type Ctx, page, systemLink, when } from './common.js'

export async function tagsPage(c: Ctx): Promise<PageResult> {
  const [index, policies] = await Promise.all([tagIndex(c.r.admin), c.r.admin.listPolicies()])
  const policyId = new Map(policies.map((p) => [p.description, p.id]))
  const none = html`<span class="muted">none</span>`
  const rows = index.map(
    (t) =>
      html`<tr><td><span class="tag">${t.tag}</span></td><td>${t.systems.length ? t.systems.map((s) => html`${systemLink(s)} `) : none}</td><td>${
        t.policies.length
          ? t.policies.map((p) => {
              const id = policyId.get(p)
              return id === undefined || !c.canChange ? html`${p}<br>` : html`<a href="/policies/${id}/edit">${p}</a><br>`
            })
          : none
      }</td><td>${t.keys.length ? t.keys.map((k) => html`<span class="mono">${k}</span> `) : none}</td></tr>`,
  )
  return page(
    c,
    'Tags',
    '/tags',
    index.length
      ? html`<table><thead><tr><th>Tag</th><th>Systems carrying it</th><th>Policies naming it</th><th>Keys giving it</th></tr></thead><tbody>${rows}</tbody></table>`
      : html`<p class="muted">No tags in use.</p>`,
  )
}

export const AUDIT_LIMIT = 200

export async function auditPage(c: Ctx): Promise<PageResult> {
  const actor = (c.r.query.get('actor') ?? '').trim()
  const q = (c.r.query.get('q') ?? '').trim()
  // `target` (a system's full trail, linked from its page) is kept as a hidden field while filtering.
  const target = (c.r.query.get('target') ?? '').trim()
  const filtered = !!(actor || q || target)
  const entries = (
    await c.r.admin.auditLog(AUDIT_LIMIT, { actor: actor || undefined, q: q || undefined, target: target || undefined })
  ).reverse()
  const filter = html`<form method="get" action="/audit" class="card filters">
<label for="actor">Actor</label> <input type="text" id="actor" name="actor" value="${actor}" size="28" placeholder="alice, token:…, key K7Q2M">
<label for="q">Text</label> <input type="text" id="q" name="q" value="${q}" size="36" placeholder="action or target: system.approve, G982V">
${target ? html`<input type="hidden" name="target" value="${target}"><span>Target: <span class="mono">${target}</span></span>` : ''}
<button type="submit">Filter</button>${filtered ? html` <a href="/audit">Clear</a>` : ''}
</form>`
  const rows = entries.map(
    (e) =>
      html`<tr><td>${when(e.at, c.now)}</td><td>${e.rev}</td><td class="nowrap">${e.actor}</td><td class="mono">${e.action}</td><td>${e.target}</td><td class="mono details">${details(e.details)}</td></tr>`,
  )
  const table = entries.length
    ? html`<table><thead><tr><th>At</th><th>Rev</th><th>Actor</th><th>Action</th><th>Target</th><th>Details</th></tr></thead><tbody>${rows}</tbody></table>
<p class="muted">The latest ${entries.length === AUDIT_LIMIT ? AUDIT_LIMIT : entries.length} entries${filtered ? ' matching the filter' : ''}, newest first.</p>`
    : html`<p class="muted">No entries${filtered ? ' match the filter' : ''}.</p>`
  return page(c, 'Audit log', '/audit', html`${filter}${table}`)
}

function details(d: unknown): string {
  if (d === null || d === undefined) return ''
  const s = JSON.stringify(d)
  if (s === '{}') return ''
  return s.length > 160 ? `${s.slice(0, 159)}…` : s
}
