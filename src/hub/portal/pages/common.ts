/**
 * What every portal page shares: the signed-in user, the pending count in the navigation, the page
 * frame, times ("3 min ago" with the exact time on hover), tags and links.
 */
import { csrfField, type Html, html, layout } from '../html.js'
import type { Flash, PageRequest, PageResult } from '../types.js'

export interface Ctx {
  r: PageRequest
  /** Systems awaiting approval (the badge beside "Pending"). */
  pending: number
  /** Whether this user may change anything (an admin); a viewer sees no change forms. */
  canChange: boolean
  now: number
}

export async function context(r: PageRequest): Promise<Ctx> {
  const pending = (await r.admin.listSystems({ pending: true })).length
  return { r, pending, canChange: r.session.role === 'admin', now: Date.now() }
}

/** A whole page: the layout with the user, the navigation entry, the flash and the pending count. */
export function page(c: Ctx, title: string, nav: string, body: Html, o: { status?: number; flash?: Flash } = {}): PageResult {
  const s = c.r.session
  return {
    html: layout(
      { title, user: { name: s.name, role: s.role, csrf: s.csrf }, nav, flash: o.flash ?? c.r.flash, pendingCount: c.pending },
      body,
    ),
    ...(o.status ? { status: o.status } : {}),
  }
}

/** A form posting to `action` with the session's CSRF token. */
export function form(c: Ctx, action: string, body: Html, cls = 'inline'): Html {
  return html`<form method="post" action="${action}" class="${cls}">${csrfField(c.r.session.csrf)}${body}</form>`
}

/** "3 min ago" / "in 6 d" with the exact ISO time in the tooltip and the datetime attribute. */
export function when(iso: string | null | undefined, now: number, never = 'never'): Html {
  if (!iso) return html`<span class="muted">${never}</span>`
  const t = Date.parse(iso)
  if (Number.isNaN(t)) return html`${iso}`
  return html`<time datetime="${iso}" title="${iso}">${relative(t, now)}</time>`
}

export function relative(t: number, now: number): string {
  const d = now - t
  const a = Math.abs(d)
  if (a < 45_000) return 'just now'
  const n =
    a < 3600_000
      ? `${Math.round(a / 60_000)} min`
      : a < 86400_000
        ? `${Math.round(a / 3600_000)} h`
        : a < 60 * 86400_000
          ? `${Math.round(a / 86400_000)} d`
          : `${Math.round(a / (30 * 86400_000))} months`
  return d >= 0 ? `${n} ago` : `in ${n}`
}

export function tags(list: string[]): Html {
  return list.length ? html`${list.map((t) => html`<span class="tag">${t}</span>`)}` : html`<span class="muted">none</span>`
}

export function systemLink(id: string): Html {
  return html`<a href="/systems/${encodeURIComponent(id)}" class="mono">${id}</a>`
}

export function stateText(state: string): Html {
  return html`<span class="state-${state}">${state}</span>`
}

/** One path segment, decoded (null when it is not valid percent-encoding). */
export function segment(s: string): string | null {
  try {
    return decodeURIComponent(s)
  } catch {
    return null
  }
}

/** "3 pairs opened, 1 closed" for a flash after a change that moves sender -> receiver pairs. */
export function pairSummary(d: { opened: string[]; closed: string[] }): string {
  if (!d.opened.length && !d.closed.length) return 'no sender -> receiver pair changes'
  const p = (n: number) => `${n} pair${n === 1 ? '' : 's'}`
  return [d.opened.length ? `${p(d.opened.length)} opened` : '', d.closed.length ? `${p(d.closed.length)} closed` : '']
    .filter(Boolean)
    .join(', ')
}
