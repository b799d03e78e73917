package bootstrap

import (
	"crypto/sha256"
	"testing"
)

// Sealed bundles come from the network and the datastore.
func FuzzOpen(f *testing.F) {
	deriveKey = func(secret string, salt []byte) ([]byte, error) {
		k := sha256.Sum256(append([]byte(secret), salt...))
		return k[:], nil
	}
	good, _ := Bundle{"a.crt": []byte("x")}.Seal("s")
	f.Add(good, "s")
	f.Add([]byte(`{"version":1,"salt":"","nonce":"","data":""}`), "s")
	f.Add([]byte("junk"), "")
	f.Fuzz(func(t *testing.T, data []byte, secret string) {
		_, _ = Open(data, secret)
	})
}
