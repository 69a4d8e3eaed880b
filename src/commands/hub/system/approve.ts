import { systemVerb } from '../../../hub/system-verb.js'

export default systemVerb('approve', 'Approve systems awaiting approval')
