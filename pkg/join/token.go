// Package join owns the join token: its format, generation and storage on
// the server. A full token is "K10<sha256 of the server CA>::server:<secret>";
// the CA hash lets an agent verify the server before it trusts it.
package join

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/pki"
)

const prefix = "K10"

// Token is a parsed join token.
type Token struct {
	// CAHash is the hex sha256 of the server CA file; empty for a bare secret.
	CAHash   string
	Username string
	Secret   string
	// Bootstrap: a bootstrap token (kedge token create); Username is its ID.
	Bootstrap bool
}

var (
	hexHash        = regexp.MustCompile(`^[0-9a-f]{64}$`)
	bootstrapToken = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)
)

// Parse accepts a full token or a bare secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("token is empty")
	}
	if !strings.HasPrefix(s, prefix) || !strings.Contains(s, "::") {
		if strings.ContainsAny(s, " \t\n:") {
			return Token{}, errors.New("token secret must not contain spaces or colons")
		}
		return Token{Username: "server", Secret: s}, nil
	}
	hash, creds, _ := strings.Cut(strings.TrimPrefix(s, prefix), "::")
	if !hexHash.MatchString(hash) {
		return Token{}, fmt.Errorf("token CA hash %q is not a sha256 in lower-case hex", hash)
	}
	// A bootstrap token (kedge token create): <id>.<secret>.
	if m := bootstrapToken.FindStringSubmatch(creds); m != nil {
		return Token{CAHash: hash, Username: m[1], Secret: m[2], Bootstrap: true}, nil
	}
	user, secret, ok := strings.Cut(creds, ":")
	if !ok || user == "" || secret == "" {
		return Token{}, errors.New(`token must end in "::<user>:<secret>"`)
	}
	return Token{CAHash: hash, Username: user, Secret: secret}, nil
}

// String renders the full token (or the bare secret if no CA hash is set).
func (t Token) String() string {
	if t.CAHash == "" {
		return t.Secret
	}
	if t.Bootstrap {
		return prefix + t.CAHash + "::" + t.Username + "." + t.Secret
	}
	return prefix + t.CAHash + "::" + t.Username + ":" + t.Secret
}

// NewSecret returns a random secret.
func NewSecret() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// EnsureServerToken returns the server's token stored at path, creating it
// on first start (from given, or a random secret), for the server CA file
// ca. A given token that does not match the stored secret is an error:
// changing it would lock out every agent that joined with the old one.
// After kedge certificate rotate-ca the stored token names the old CA; it
// is rewritten to name the new one, and tokens naming the old one are
// still accepted (pki.PinnedBy).
func EnsureServerToken(path string, ca []byte, given string) (Token, error) {
	caHash := pki.HashOf(ca)
	var want Token
	if given != "" {
		t, err := Parse(given)
		if err != nil {
			return Token{}, fmt.Errorf("--token: %w", err)
		}
		if t.CAHash != "" && !pki.PinnedBy(ca, t.CAHash) {
			return Token{}, errors.New("--token: its CA hash does not match this server's CA")
		}
		want = t
	}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored, err := Parse(string(data))
		if err != nil {
			return Token{}, fmt.Errorf("token file %s: %w", path, err)
		}
		if !pki.PinnedBy(ca, stored.CAHash) {
			return Token{}, fmt.Errorf("token file %s was made for another CA; remove it to issue a new token", path)
		}
		if given != "" && want.Secret != stored.Secret {
			return Token{}, fmt.Errorf("--token does not match the token this server was started with (%s); start without --token or with the stored one", path)
		}
		if stored.CAHash != caHash {
			stored.CAHash = caHash
			if err := datadir.WriteFileAtomic(path, []byte(stored.String()+"\n"), 0o600); err != nil {
				return Token{}, err
			}
		}
		return stored, nil
	case !errors.Is(err, os.ErrNotExist):
		return Token{}, fmt.Errorf("token file %s: %w", path, err)
	}
	if want.Secret == "" {
		if want.Secret, err = NewSecret(); err != nil {
			return Token{}, fmt.Errorf("generate token: %w", err)
		}
	}
	t := Token{CAHash: caHash, Username: "server", Secret: want.Secret}
	if err := datadir.WriteFileAtomic(path, []byte(t.String()+"\n"), 0o600); err != nil {
		return Token{}, err
	}
	return t, nil
}

// EnsureAgentToken stores the agent token given with --agent-token
// (user "node"), or leaves none; a later start with another one replaces
// it: agents that joined keep their certificates.
func EnsureAgentToken(path string, ca []byte, given string) error {
	caHash := pki.HashOf(ca)
	if given == "" {
		if old, err := ReadToken(path); err == nil && old.CAHash != caHash && pki.PinnedBy(ca, old.CAHash) {
			old.CAHash = caHash // the CA rotated
			return datadir.WriteFileAtomic(path, []byte(old.String()+"\n"), 0o600)
		}
		return nil
	}
	t, err := Parse(given)
	if err != nil {
		return fmt.Errorf("--agent-token: %w", err)
	}
	if t.CAHash != "" && !pki.PinnedBy(ca, t.CAHash) {
		return errors.New("--agent-token: its CA hash does not match this server's CA")
	}
	t = Token{CAHash: caHash, Username: "node", Secret: t.Secret}
	if old, err := ReadToken(path); err == nil && old == t {
		return nil
	}
	return datadir.WriteFileAtomic(path, []byte(t.String()+"\n"), 0o600)
}
