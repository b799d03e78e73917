package join

import (
	"github.com/kedge-dev/kedge/pkg/pki"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		want    Token
		wantErr string
	}{
		{"K10" + hash + "::server:s3cret", Token{CAHash: hash, Username: "server", Secret: "s3cret"}, ""},
		{"plainsecret", Token{Username: "server", Secret: "plainsecret"}, ""},
		{"  plainsecret\n", Token{Username: "server", Secret: "plainsecret"}, ""},
		{"", Token{}, "empty"},
		{"K10abc::server:x", Token{}, "CA hash"},
		{"K10" + hash + "::server", Token{}, "<user>:<secret>"},
		{"K10" + hash + "::server:", Token{}, "<user>:<secret>"},
		{"with space", Token{}, "spaces"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
			if again, _ := Parse(got.String()); again != got {
				t.Fatalf("round trip %+v -> %q -> %+v", got, got.String(), again)
			}
		})
	}
}

func TestEnsureServerToken(t *testing.T) {
	ca := []byte("the server CA")
	caHash := pki.HashOf(ca)
	path := filepath.Join(t.TempDir(), "token")
	first, err := EnsureServerToken(path, ca, "")
	if err != nil {
		t.Fatal(err)
	}
	if first.CAHash != caHash || len(first.Secret) != 32 {
		t.Fatalf("generated %+v", first)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %o", st.Mode().Perm())
	}
	again, err := EnsureServerToken(path, ca, "")
	if err != nil || again != first {
		t.Fatalf("restart changed the token: %+v %v", again, err)
	}
	if _, err := EnsureServerToken(path, ca, first.Secret); err != nil {
		t.Fatalf("the stored secret given again: %v", err)
	}
	if _, err := EnsureServerToken(path, ca, first.String()); err != nil {
		t.Fatalf("the full token given again: %v", err)
	}
	if _, err := EnsureServerToken(path, ca, "other"); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("a different --token: %v", err)
	}
	other := strings.Repeat("f", 64)
	if _, err := EnsureServerToken(path, []byte("another CA"), ""); err == nil {
		t.Fatal("token of another CA accepted")
	}

	given := filepath.Join(t.TempDir(), "token")
	tok, err := EnsureServerToken(given, ca, "mysecret")
	if err != nil || tok.Secret != "mysecret" {
		t.Fatalf("given secret: %+v %v", tok, err)
	}
	if _, err := EnsureServerToken(filepath.Join(t.TempDir(), "t"), ca, "K10"+other+"::server:x"); err == nil {
		t.Fatal("a token naming another CA accepted")
	}
}
