package etcd

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSnapshotFiles(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"etcd-snapshot-s1-1", "etcd-snapshot-s1-2", "etcd-snapshot-s1-3", "on-demand-s1-4", "etcd-snapshot-s1-5.part"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), 0o600)
		at := time.Unix(int64(1000+i), 0)
		os.Chtimes(p, at, at)
	}
	snaps, err := Snapshots(dir)
	if err != nil || len(snaps) != 4 || snaps[0].Name != "etcd-snapshot-s1-1" {
		t.Fatalf("snapshots %v %v", snaps, err)
	}
	deleted, err := Prune(dir, ScheduledPrefix, 2)
	if err != nil || len(deleted) != 1 || deleted[0] != "etcd-snapshot-s1-1" {
		t.Fatalf("prune: %v %v", deleted, err)
	}
	if err := Delete(dir, "../etc/passwd"); err == nil {
		t.Fatal("deleted a path outside the dir")
	}
	if err := Delete(dir, "nope"); err == nil {
		t.Fatal("deleted a missing snapshot")
	}
	if err := Delete(dir, "on-demand-s1-4"); err != nil {
		t.Fatal(err)
	}
	if err := Check(filepath.Join(dir, "etcd-snapshot-s1-2"), slog.Default()); err == nil {
		t.Fatal("a file that is not a snapshot passed the check")
	}
}

func TestParseSchedule(t *testing.T) {
	if ParseSchedule("0 */12 * * *") != nil || ParseSchedule("every day") == nil {
		t.Fatal("schedule parsing")
	}
}
