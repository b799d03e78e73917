package datastore

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// Snapshot writes a consistent copy of the SQLite database into dir while
// kine keeps serving (VACUUM INTO reads one snapshot of the WAL database)
// and returns its path.
func Snapshot(ctx context.Context, dbFile, dir string) (string, error) {
	if _, err := os.Stat(dbFile); err != nil {
		return "", fmt.Errorf("SQLite database %s: %w (does this server use SQLite?)", dbFile, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, fmt.Sprintf("kedge-sqlite-%d.db", time.Now().Unix()))
	db, err := sql.Open("sqlite", "file:"+dbFile+"?mode=ro&_pragma=busy_timeout(30000)")
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", path); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", dbFile, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", err
	}
	if err := CheckSQLiteFile(path); err != nil {
		return "", err
	}
	return path, nil
}

// Restore puts snapshot in place of the database dbFile (kedge stopped),
// keeping the current one (and its WAL) beside it, and returns that
// backup's path. A file that is not a kine SQLite database changes nothing.
func Restore(snapshot, dbFile string) (string, error) {
	if fi, err := os.Stat(snapshot); err != nil || fi.Size() == 0 {
		return "", fmt.Errorf("snapshot %s: not a database (%v)", snapshot, err)
	}
	if err := CheckSQLiteFile(snapshot); err != nil {
		return "", err
	}
	if !hasKineTable(snapshot) {
		return "", fmt.Errorf("snapshot %s is SQLite but not a kedge datastore (no kine table)", snapshot)
	}
	backup := fmt.Sprintf("%s.before-restore-%d", dbFile, time.Now().Unix())
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(dbFile+suffix, backup+suffix); err != nil && !os.IsNotExist(err) {
			return "", err
		}
	}
	in, err := os.Open(snapshot)
	if err != nil {
		return "", err
	}
	defer in.Close()
	data, err := io.ReadAll(in)
	if err != nil {
		return "", err
	}
	if err := datadir.WriteFileAtomic(dbFile, data, 0o600); err != nil {
		return "", err
	}
	return backup, nil
}

func hasKineTable(path string) bool {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return false
	}
	defer db.Close()
	var n int
	err = db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'kine'`).Scan(&n)
	return err == nil && n == 1
}
