package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Runs late (file order) because it kills containerd under the shared node.
func TestContainerdIsRestarted(t *testing.T) {
	pidFile := filepath.Join(shared.dir, "run", "containerd", "containerd.pid")
	read := func() int {
		data, _ := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return pid
	}
	old := read()
	if old <= 1 {
		t.Fatalf("containerd PID file %s: %d", pidFile, old)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "kedge restarts containerd and says so", func() error {
		if pid := read(); pid == old || pid <= 1 {
			return os.ErrNotExist
		}
		if !strings.Contains(shared.logTail(400), "containerd exited unexpectedly; restarting") {
			return os.ErrNotExist
		}
		return nil
	})
	// The node keeps running pods.
	ns := namespace(t, shared)
	shared.runToCompletion(t, ns, "after", "kedge.test/worker:v1", "Never", "containerd is back")
	if err := shared.waitNodeReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
