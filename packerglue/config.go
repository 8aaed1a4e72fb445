package packerglue

// IsSet tells whether the user's configuration sets key at all (an empty
// list is a choice, not the default). HCL2 passes every key of the spec,
// unset ones as nil.
func IsSet(raws []interface{}, key string) bool {
	for _, r := range raws {
		if m, ok := r.(map[string]interface{}); ok {
			if v, ok := m[key]; ok && v != nil {
				return true
			}
		}
	}
	return false
}
