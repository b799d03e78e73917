// Package datadir owns the layout of kedge's data directory and creates it
// with the right modes.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Layout names every path under the data dir.
type Layout struct{ Root string }

func (l Layout) Server() string     { return filepath.Join(l.Root, "server") }
func (l Layout) DBDir() string      { return filepath.Join(l.Server(), "db") }
func (l Layout) DBFile() string     { return filepath.Join(l.DBDir(), "state.db") }
func (l Layout) KineSocket() string { return filepath.Join(l.DBDir(), "kine.sock") }
func (l Layout) TLSDir() string     { return filepath.Join(l.Server(), "tls") }
func (l Layout) CredDir() string    { return filepath.Join(l.Server(), "cred") }
func (l Layout) TokenFile() string  { return filepath.Join(l.Server(), "token") }

// AgentTokenFile holds the agent token (--agent-token), if there is one.
func (l Layout) AgentTokenFile() string { return filepath.Join(l.Server(), "agent-token") }
func (l Layout) ManifestsDir() string   { return filepath.Join(l.Server(), "manifests") }
func (l Layout) Agent() string          { return filepath.Join(l.Root, "agent") }
func (l Layout) ImagesDir() string      { return filepath.Join(l.Agent(), "images") }

// SQLiteSnapshotDir is where `kedge datastore snapshot` writes.
func (l Layout) SQLiteSnapshotDir() string { return filepath.Join(l.DBDir(), "snapshots") }

// StaticChartsDir holds Helm charts served at /static/charts/.
func (l Layout) StaticChartsDir() string { return filepath.Join(l.Server(), "static", "charts") }

// EnsureServer creates the server's directories (private ones 0700) and
// checks that the data dir is writable before anything is written into it.
func (l Layout) EnsureServer() error {
	if err := os.MkdirAll(l.Root, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w (choose another with --data-dir)", l.Root, err)
	}
	probe, err := os.CreateTemp(l.Root, ".write-test-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w (choose another with --data-dir)", l.Root, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	for _, d := range []string{l.Server(), l.DBDir(), l.TLSDir(), l.CredDir(), filepath.Dir(l.StaticChartsDir()), l.StaticChartsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		// MkdirAll keeps the mode of an existing dir; tighten it.
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", d, err)
		}
	}
	if err := os.MkdirAll(l.ManifestsDir(), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", l.ManifestsDir(), err)
	}
	return nil
}

// WritePIDFile records kedge's PID in <runDir>/<role>.pid (kedge.pid for
// a server, kedge-agent.pid for an agent), where kedge-killall.sh finds it,
// and returns a function removing it.
func WritePIDFile(runDir, role string) (func(), error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("run dir %s (--run-dir): %w", runDir, err)
	}
	path := filepath.Join(runDir, role+".pid")
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return func() { os.Remove(path) }, nil
}

// Running returns the PID in <runDir>/<role>.pid if that process lives.
func Running(runDir, role string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(runDir, role+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return pid, true
}
