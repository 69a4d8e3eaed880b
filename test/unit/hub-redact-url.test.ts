/**
 * redactUrl (src/hub/store.ts): a PostgreSQL URL as it appears in messages, logs and `hub init`'s output
 * holds no password, whether it is the URL's user-info or a `password` parameter (libpq and node-postgres
 * both read `?password=`).
 */
import t from 'tap'
import { redactUrl } from '../../src/hub/store.js'

t.test('the password of the user-info is hidden', async (t) => {
  const r = redactUrl('postgres://hub:s3cret-pw@db.example:5432/enclave')
  t.notMatch(r, /s3cret-pw/)
  t.match(r, /db\.example:5432\/enclave/)
})

t.test('a password parameter is hidden', async (t) => {
  const r = redactUrl('postgresql:///enclave_hub?host=/run/postgresql&password=s3cret-pw&sslpassword=k3y-pw')
  t.notMatch(r, /s3cret-pw/, 'password=')
  t.notMatch(r, /k3y-pw/, 'sslpassword=')
  t.match(r, /host=/, 'the rest stays')
})

t.test('a URL that is not one says nothing of its content', async (t) => {
  t.equal(redactUrl('not a url s3cret-pw'), '(an unreadable URL)')
})
