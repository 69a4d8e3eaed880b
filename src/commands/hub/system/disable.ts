import { systemVerb } from '../../../hub/system-verb.js'

export default systemVerb('disable', 'Disable systems: every peer drops them at once; they cannot connect')
