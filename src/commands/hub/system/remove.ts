import { systemVerb } from '../../../hub/system-verb.js'

export default systemVerb('remove', 'Remove systems: every peer drops them; their key is no longer accepted')
