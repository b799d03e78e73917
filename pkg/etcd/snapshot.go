package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap/zapcore"

	kedgelog "github.com/kedge-dev/kedge/pkg/log"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Snapshot is one snapshot file.
type Snapshot struct {
	Name    string
	Path    string
	Size    int64
	Created time.Time
}

// ScheduledPrefix names the snapshots the schedule takes; Prune removes
// only those (k3s's "etcd-snapshot"); on-demand ones are the user's.
const (
	ScheduledPrefix = "etcd-snapshot"
	OnDemandPrefix  = "on-demand"
)

func manager(log *slog.Logger) snapshot.Manager {
	return snapshot.NewV3(kedgelog.Zap(log, zapcore.WarnLevel))
}

// Save writes a snapshot of the local member into dir, named
// <prefix>-<node>-<unix time>, and returns its path.
func Save(ctx context.Context, f pki.Files, dir, prefix, node string, log *slog.Logger) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("snapshot dir %s: %w", dir, err)
	}
	tlsInfo := transport.TLSInfo{CertFile: f.EtcdClientCert, KeyFile: f.EtcdClientKey, TrustedCAFile: f.EtcdServerCACert}
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		return "", err
	}
	tc.MinVersion = tls.VersionTLS12
	path := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", prefix, node, time.Now().Unix()))
	_, err = manager(log).Save(ctx, clientv3.Config{Endpoints: []string{ClientURL("127.0.0.1")}, TLS: tc, DialTimeout: 5 * time.Second}, path)
	if err != nil {
		return "", fmt.Errorf("etcd snapshot (is kedge server running with embedded etcd?): %w", err)
	}
	return path, os.Chmod(path, 0o600)
}

// Snapshots returns the snapshots in dir, oldest first.
func Snapshots(dir string) ([]Snapshot, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range entries {
		if e.IsDir() || strings.HasSuffix(e.Name(), ".part") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Snapshot{Name: e.Name(), Path: filepath.Join(dir, e.Name()), Size: info.Size(), Created: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Delete removes the named snapshot from dir (a name, not a path).
func Delete(dir, name string) error {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("%q is not a snapshot name (see kedge etcd-snapshot ls)", name)
	}
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no snapshot %q in %s", name, dir)
		}
		return err
	}
	return nil
}

// Prune keeps the newest keep snapshots with prefix and deletes the rest.
func Prune(dir, prefix string, keep int) ([]string, error) {
	all, err := Snapshots(dir)
	if err != nil {
		return nil, err
	}
	var mine []Snapshot
	for _, s := range all {
		if strings.HasPrefix(s.Name, prefix+"-") {
			mine = append(mine, s)
		}
	}
	var deleted []string
	for len(mine) > keep {
		if err := os.Remove(mine[0].Path); err != nil {
			return deleted, err
		}
		deleted = append(deleted, mine[0].Name)
		mine = mine[1:]
	}
	return deleted, nil
}

// Check reports whether path is an etcd snapshot, before anything is
// changed for a restore.
func Check(path string, log *slog.Logger) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--cluster-reset-restore-path: %w", err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("--cluster-reset-restore-path: %s is not a file", path)
	}
	if _, err := manager(log).Status(path); err != nil {
		return fmt.Errorf("--cluster-reset-restore-path: %s is not an etcd snapshot: %v", path, err)
	}
	return nil
}

// Restore makes dataDir a one-member cluster (name at ip) holding the
// snapshot. The old data dir is kept beside it as <dataDir>-old-<time>.
func Restore(path, dataDir, name, ip string, log *slog.Logger) (string, error) {
	if err := Check(path, log); err != nil {
		return "", err
	}
	old := ""
	if _, err := os.Stat(dataDir); err == nil {
		old = fmt.Sprintf("%s-old-%d", dataDir, time.Now().Unix())
		if err := os.Rename(dataDir, old); err != nil {
			return "", err
		}
	}
	err := manager(log).Restore(snapshot.RestoreConfig{
		SnapshotPath:        path,
		Name:                name,
		OutputDataDir:       dataDir,
		PeerURLs:            []string{PeerURL(ip)},
		InitialCluster:      name + "=" + PeerURL(ip),
		InitialClusterToken: "kedge",
	})
	if err != nil {
		if old != "" {
			os.RemoveAll(dataDir)
			os.Rename(old, dataDir)
		}
		return "", fmt.Errorf("restore %s: %w", path, err)
	}
	return old, nil
}

// Snapshotter takes scheduled snapshots of the local member and keeps the
// newest Retention.
type Snapshotter struct {
	Cron      string
	Retention int
	Dir       string
	Node      string
	TLS       pki.Files
	Log       *slog.Logger

	c *cron.Cron
}

// ParseSchedule checks a cron expression (--etcd-snapshot-schedule-cron).
func ParseSchedule(spec string) error {
	_, err := cron.ParseStandard(spec)
	return err
}

func (s *Snapshotter) Name() string { return "etcd-snapshots" }

func (s *Snapshotter) Start(context.Context) error {
	s.c = cron.New()
	if _, err := s.c.AddFunc(s.Cron, s.take); err != nil {
		return fmt.Errorf("--etcd-snapshot-schedule-cron %q: %w", s.Cron, err)
	}
	s.c.Start()
	s.Log.Info("scheduled etcd snapshots", "cron", s.Cron, "retention", s.Retention, "dir", s.Dir)
	return nil
}

func (s *Snapshotter) take() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	path, err := Save(ctx, s.TLS, s.Dir, ScheduledPrefix, s.Node, s.Log)
	if err != nil {
		s.Log.Error("scheduled etcd snapshot failed", "err", err)
		return
	}
	deleted, err := Prune(s.Dir, ScheduledPrefix, s.Retention)
	if err != nil {
		s.Log.Warn("pruning etcd snapshots", "err", err)
	}
	s.Log.Info("etcd snapshot saved", "path", path, "pruned", deleted)
}

func (s *Snapshotter) Ready(context.Context) error { return nil }

func (s *Snapshotter) Stop() error {
	if s.c != nil {
		<-s.c.Stop().Done()
	}
	return nil
}
