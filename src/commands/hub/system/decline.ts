import { systemVerb } from '../../../hub/system-verb.js'

export default systemVerb('decline', 'Decline systems awaiting approval (they are deleted)')
