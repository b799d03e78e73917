package install

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite install.sh's copy of scripts/kedge-killall.sh")

const (
	embedStart = "    cat <<'KEDGE_KILLALL_EOF'\n"
	embedEnd   = "KEDGE_KILLALL_EOF\n"
)

// install.sh is downloaded alone, so it carries kedge-killall.sh in a
// here-document. scripts/kedge-killall.sh is the one to edit; this test
// fails until the copy is regenerated with -update.
func TestKillallEmbedded(t *testing.T) {
	script, err := os.ReadFile(installSh)
	if err != nil {
		t.Fatal(err)
	}
	killall, err := os.ReadFile(killallSh)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(killall, []byte(embedEnd)) {
		t.Fatalf("%s contains the line %q that ends install.sh's copy of it", killallSh, embedEnd)
	}
	start := bytes.Index(script, []byte(embedStart))
	if start < 0 {
		t.Fatalf("%s: no line %q", installSh, embedStart)
	}
	start += len(embedStart)
	end := bytes.Index(script[start:], []byte(embedEnd))
	if end < 0 {
		t.Fatalf("%s: no line %q after the here-document's start", installSh, embedEnd)
	}
	end += start
	if bytes.Equal(script[start:end], killall) {
		return
	}
	if !*update {
		t.Fatalf("install.sh's copy of %s is out of date: run go test ./tests/install -run TestKillallEmbedded -update", killallSh)
	}
	updated := append(append(append([]byte{}, script[:start]...), killall...), script[end:]...)
	if err := os.WriteFile(installSh, updated, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("updated the copy of %s in %s", killallSh, installSh)
}
