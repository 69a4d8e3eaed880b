import { systemVerb } from '../../../hub/system-verb.js'

export default systemVerb('enable', 'Enable disabled systems again')
