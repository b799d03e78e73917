package images

import "testing"

// Image names come from archives anyone can drop in the images dir.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"myapp:v1", "docker.io/library/x", "a/b/c:d@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ":", "UPPER:case"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		n := Normalize(ref)
		if Normalize(n) != n {
			t.Fatalf("Normalize is not idempotent: %q -> %q -> %q", ref, n, Normalize(n))
		}
	})
}
