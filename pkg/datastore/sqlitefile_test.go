package datastore

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckSQLiteFile(t *testing.T) {
	dir := t.TempDir()
	sqlite := func(name, stmt string) string {
		p := filepath.Join(dir, name)
		db, err := sql.Open("sqlite", p)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, path, wantErr string
	}{
		{"missing", filepath.Join(dir, "missing.db"), ""},
		{"empty", file("empty.db", ""), ""},
		{"kine database", sqlite("kine.db", "CREATE TABLE kine (id INTEGER)"), ""},
		{"empty sqlite", sqlite("blank.db", "PRAGMA user_version = 1"), ""},
		{"garbage", file("garbage.db", strings.Repeat("x", 200)), "not a SQLite database"},
		{"short", file("short.db", "SQL"), "not a SQLite database"},
		{"foreign sqlite", sqlite("foreign.db", "CREATE TABLE users (name TEXT)"), "another program"},
		{"directory", dir, "not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSQLiteFile(tc.path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %v, want %q naming %s", err, tc.wantErr, tc.path)
			}
		})
	}
}
