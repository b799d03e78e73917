// Package etcd runs etcd (go.etcd.io/etcd/server/v3/embed) inside kedge,
// the datastore of servers that form a highly available cluster
// (--cluster-init, then --server on the others). It owns the member's
// configuration and TLS (kedge's etcd CAs, pkg/pki), joining a cluster as
// a learner promoted once in sync, member removal, snapshots and restore.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/kedge-dev/kedge/pkg/component"
	kedgelog "github.com/kedge-dev/kedge/pkg/log"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Ports of a member: clients (the apiservers) and peers.
const (
	ClientPort = 2379
	PeerPort   = 2380
)

// Options configure the member.
type Options struct {
	// Name is the member name: the server's node name.
	Name string
	// Dir is etcd's data dir (<data-dir>/server/db/etcd).
	Dir string
	// IP is the address peers and other servers reach this member at.
	IP  string
	TLS pki.Files
	// InitialCluster and State describe the cluster a new member forms or
	// joins ("new": a cluster of its own; "existing": added by a member).
	// Both are ignored once Dir holds data.
	InitialCluster string
	State          string
	// ForceNewCluster makes a member with data a one-member cluster
	// (--cluster-reset).
	ForceNewCluster bool
	Log             *slog.Logger
	// Verbose logs etcd's info messages too.
	Verbose bool
}

// Etcd is the embedded etcd component.
type Etcd struct {
	Options
	e *embed.Etcd
}

// New returns the component.
func New(o Options) *Etcd { return &Etcd{Options: o} }

func (m *Etcd) Name() string { return "etcd" }

// PeerURL is this member's peer URL.
func PeerURL(ip string) string {
	return "https://" + net.JoinHostPort(ip, strconv.Itoa(PeerPort))
}

// ClientURL is this member's client URL on ip.
func ClientURL(ip string) string {
	return "https://" + net.JoinHostPort(ip, strconv.Itoa(ClientPort))
}

// Endpoints are where the local apiserver and kedge reach the member.
func (m *Etcd) Endpoints() []string { return []string{ClientURL("127.0.0.1")} }

// HasData reports whether dir holds a member's data (a restart).
func HasData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "snap"))
	return err == nil
}

func (m *Etcd) config() (*embed.Config, error) {
	cfg := embed.NewConfig()
	cfg.Name = m.Options.Name
	cfg.Dir = m.Dir
	parse := func(s string) url.URL {
		u, _ := url.Parse(s)
		return *u
	}
	cfg.ListenClientUrls = []url.URL{parse(ClientURL("127.0.0.1"))}
	if m.IP != "127.0.0.1" {
		cfg.ListenClientUrls = append(cfg.ListenClientUrls, parse(ClientURL(m.IP)))
	}
	cfg.AdvertiseClientUrls = []url.URL{parse(ClientURL(m.IP))}
	cfg.ListenPeerUrls = []url.URL{parse(PeerURL(m.IP))}
	cfg.AdvertisePeerUrls = []url.URL{parse(PeerURL(m.IP))}
	cfg.InitialCluster = m.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = m.Options.Name + "=" + PeerURL(m.IP)
	}
	cfg.ClusterState = embed.ClusterStateFlagNew
	if m.State == embed.ClusterStateFlagExisting {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.InitialClusterToken = "kedge"
	cfg.ForceNewCluster = m.ForceNewCluster
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile: m.TLS.EtcdServerCert, KeyFile: m.TLS.EtcdServerKey,
		TrustedCAFile: m.TLS.EtcdServerCACert, ClientCertAuth: true,
	}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile: m.TLS.EtcdPeerCert, KeyFile: m.TLS.EtcdPeerKey,
		TrustedCAFile: m.TLS.EtcdPeerCACert, ClientCertAuth: true,
	}
	// Fewer, later snapshots of the raft log: fewer writes on flash. The
	// apiserver compacts the keyspace itself every 5 minutes.
	cfg.SnapshotCount = 10000
	// k3s's timings, not etcd's 100 ms / 1 s: an SD card's fsync or a
	// busy 2-core board stalls a member for more than a second, and with
	// two voters (while a third joins) one stall costs the leader.
	cfg.TickMs, cfg.ElectionMs = 500, 5000
	cfg.Metrics = "basic"
	cfg.ListenMetricsUrls = nil
	min := zapcore.WarnLevel
	if m.Verbose {
		min = zapcore.InfoLevel
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(kedgelog.Zap(m.Log, min))
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("etcd config: %w", err)
	}
	return cfg, nil
}

func (m *Etcd) Start(ctx context.Context) error {
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return fmt.Errorf("etcd data dir %s: %w", m.Dir, err)
	}
	cfg, err := m.config()
	if err != nil {
		return err
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start etcd member %s (peer %s): %w", m.Options.Name, PeerURL(m.IP), err)
	}
	m.e = e
	go func() {
		select {
		case err := <-e.Err():
			if err != nil {
				component.Fail(ctx, fmt.Errorf("etcd: %w", err))
			}
		case <-e.Server.StopNotify():
		}
	}()
	m.Log.Info("etcd member starting", "name", m.Options.Name, "peer", PeerURL(m.IP), "cluster", cfg.InitialCluster, "state", cfg.ClusterState, "dataDir", m.Dir)
	return nil
}

// Ready is nil once the member serves a linearizable read. A member that
// joined as a learner is first promoted to a voting member, through the
// members it joined, once it has caught up.
func (m *Etcd) Ready(ctx context.Context) error {
	select {
	case <-m.e.Server.ReadyNotify():
	default:
		return errors.New("etcd member not ready (waiting for the cluster's quorum)")
	}
	if m.e.Server.IsLearner() {
		if err := m.promote(ctx); err != nil {
			return err
		}
		// The member serves reads only once it has applied its own
		// promotion; until then it still answers as a learner.
		return errors.New("etcd member promoted, waiting for it to apply the promotion")
	}
	cli, err := NewClient(m.TLS, m.Endpoints())
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Get(ctx, "/kedge/health"); err != nil {
		return fmt.Errorf("etcd read: %w", err)
	}
	return nil
}

// promote asks the other members to make this learner a voter; it fails
// (and Ready is asked again) while the learner is still catching up.
func (m *Etcd) promote(ctx context.Context) error {
	var others []string
	self := m.e.Server.MemberID()
	for _, mem := range m.e.Server.Cluster().Members() {
		if mem.ID == self {
			continue
		}
		for _, peer := range mem.PeerURLs {
			if u, err := url.Parse(peer); err == nil {
				others = append(others, ClientURL(u.Hostname()))
			}
		}
	}
	if len(others) == 0 {
		return errors.New("etcd learner: no other member known to promote it")
	}
	cli, err := NewClient(m.TLS, others)
	if err != nil {
		return err
	}
	defer cli.Close()
	id := uint64(m.e.Server.MemberID())
	if _, err := cli.MemberPromote(ctx, id); err != nil {
		return fmt.Errorf("etcd learner %s not promoted yet: %w", m.Options.Name, err)
	}
	m.Log.Info("etcd member promoted to voter", "name", m.Options.Name)
	return nil
}

func (m *Etcd) Stop() error {
	if m.e == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { m.e.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("etcd did not stop within 15s")
	}
}

// NewClient is an etcd client with kedge's etcd client certificate.
func NewClient(f pki.Files, endpoints []string) (*clientv3.Client, error) {
	tlsInfo := transport.TLSInfo{CertFile: f.EtcdClientCert, KeyFile: f.EtcdClientKey, TrustedCAFile: f.EtcdServerCACert}
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS: %w", err)
	}
	tc.MinVersion = tls.VersionTLS12
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tc,
		DialTimeout: 5 * time.Second,
		Logger:      kedgelog.Zap(slog.Default().With("component", "etcd-client"), zapcore.ErrorLevel),
	})
}
