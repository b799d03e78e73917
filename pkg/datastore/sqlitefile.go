package datastore

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"

	// The pure-Go SQLite driver kine itself uses without cgo.
	_ "modernc.org/sqlite"
)

var sqliteMagic = []byte("SQLite format 3\x00")

// CheckSQLiteFile refuses a file at the database path that kedge did not
// write: anything that is not SQLite, or a SQLite database without kine's
// table but with tables of its own. A missing or empty file is fine.
func CheckSQLiteFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("database %s is not a regular file; kedge will not touch it: move it away or choose another --data-dir", path)
	}
	if st.Size() == 0 {
		return nil
	}
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, sqliteMagic) {
		return fmt.Errorf("database %s is not a SQLite database (corrupt or foreign file); kedge will not overwrite it: move it away, restore a backup, or choose another --data-dir", path)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table'`)
	if err != nil {
		return fmt.Errorf("database %s is not readable as SQLite (corrupt?): %w; kedge will not overwrite it", path, err)
	}
	defer rows.Close()
	var tables []string
	hasKine := false
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("database %s: %w", path, err)
		}
		tables = append(tables, name)
		hasKine = hasKine || name == "kine"
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("database %s is not readable as SQLite (corrupt?): %w; kedge will not overwrite it", path, err)
	}
	if len(tables) > 0 && !hasKine {
		return fmt.Errorf("database %s is a SQLite database of another program (tables %v, no kine table); kedge will not modify it: move it away or choose another --data-dir", path, tables)
	}
	return nil
}
