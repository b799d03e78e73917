package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kedge-dev/kedge/pkg/datastore"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Migrate moves a SQLite server's data into its new embedded etcd (the
// first start with --cluster-init): every key kine serves, but Events,
// which are short-lived. The SQLite files are then renamed, kept as a
// backup, so the copy happens once.
type Migrate struct {
	DBFile string
	Socket string
	TLS    pki.Files
	Log    *slog.Logger
}

// BackupSuffix is appended to the SQLite files after a migration.
const BackupSuffix = ".migrated-to-etcd"

// Pending reports whether dbFile is a database not yet migrated.
func Pending(dbFile string) bool {
	_, err := os.Stat(dbFile)
	return err == nil
}

func (m *Migrate) Name() string { return "migrate-sqlite-to-etcd" }

func (m *Migrate) Start(ctx context.Context) error {
	begin := time.Now()
	dst, err := NewClient(m.TLS, []string{ClientURL("127.0.0.1")})
	if err != nil {
		return err
	}
	defer dst.Close()
	var keys int
	err = datastore.Peek(ctx, datastore.Options{DBFile: m.DBFile, Socket: m.Socket, Log: m.Log}, func(src *clientv3.Client) error {
		var err error
		keys, err = copyKeys(ctx, src, dst)
		return err
	})
	if err != nil {
		return fmt.Errorf("move %s into etcd: %w (the SQLite database is unchanged; fix the cause and restart)", m.DBFile, err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(m.DBFile+suffix, m.DBFile+suffix+BackupSuffix); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("keep the SQLite database as a backup: %w", err)
		}
	}
	m.Log.Info("moved the SQLite database into etcd", "keys", keys, "backup", m.DBFile+BackupSuffix, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// copyKeys copies every key under / from src to dst, a page at a time.
func copyKeys(ctx context.Context, src, dst *clientv3.Client) (int, error) {
	n := 0
	key := "/"
	end := clientv3.GetPrefixRangeEnd("/")
	for {
		resp, err := src.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(500), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return n, err
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			if strings.HasPrefix(k, "/registry/events/") || k == "/kedge/health" {
				continue
			}
			if _, err := dst.Put(ctx, k, string(kv.Value)); err != nil {
				return n, fmt.Errorf("put %s: %w", k, err)
			}
			n++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (m *Migrate) Ready(context.Context) error { return nil }
func (m *Migrate) Stop() error                 { return nil }
