package cloudimport

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"fmt"
	"hash"
	"sort"
	"strings"
)

// hashes are the algorithms by the names Glance reports them in
// os_hash_algo: its hashing_algorithm option takes any name of Python's
// hashlib (glance/common/config.py; default sha512).
var hashes = map[string]func() hash.Hash{
	"md5": md5.New, "sha1": sha1.New, "sha224": sha256.New224, "sha256": sha256.New,
	"sha384": sha512.New384, "sha512": sha512.New, "sha512_224": sha512.New512_224, "sha512_256": sha512.New512_256,
	"sha3_224": func() hash.Hash { return sha3.New224() }, "sha3_256": func() hash.Hash { return sha3.New256() },
	"sha3_384": func() hash.Hash { return sha3.New384() }, "sha3_512": func() hash.Hash { return sha3.New512() },
}

// NewHash returns a hash of the algorithm named as hashlib (and Glance's
// os_hash_algo) names it: md5, sha1, sha224, sha256, sha384, sha512,
// sha512_224, sha512_256, sha3_224 ... sha3_512. Case does not matter.
func NewHash(algo string) (hash.Hash, error) {
	if f, ok := hashes[strings.ToLower(algo)]; ok {
		return f(), nil
	}
	names := make([]string, 0, len(hashes))
	for k := range hashes {
		names = append(names, k)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("hash algorithm %q is not one of %s", algo, strings.Join(names, ", "))
}
