package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kedge-dev/kedge/pkg/component"
)

// Options configure the containerd child.
type Options struct {
	ConfigFile string
	Socket     string
	// BinDir is put first on containerd's PATH so it finds the shim.
	BinDir  string
	LogFile string
	PIDFile string
	Log     *slog.Logger
}

// Containerd supervises the containerd child process: if it dies, kedge
// restarts it and says so.
type Containerd struct {
	opts Options

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping bool
	exited   chan struct{}
	done     chan struct{}
}

// New returns the containerd component.
func New(o Options) *Containerd { return &Containerd{opts: o} }

func (c *Containerd) Name() string { return "containerd" }

func (c *Containerd) Start(ctx context.Context) error {
	c.stopPrevious()
	if err := os.MkdirAll(filepath.Dir(c.opts.Socket), 0o700); err != nil {
		return err
	}
	if err := c.spawn(); err != nil {
		return err
	}
	c.done = make(chan struct{})
	go c.supervise(ctx)
	return nil
}

// stopPrevious stops a containerd left by an earlier kedge that was killed
// (found by its PID file, checked against its command line), so the new one
// can take the socket. Running containers keep running: their shims are
// separate processes and the new containerd reconnects to them.
func (c *Containerd) stopPrevious() {
	data, err := os.ReadFile(c.opts.PIDFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), c.opts.ConfigFile) {
		return
	}
	c.opts.Log.Info("stopping containerd left by a previous run", "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func (c *Containerd) spawn() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find kedge's own executable: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.opts.LogFile), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(c.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("containerd log %s: %w", c.opts.LogFile, err)
	}
	cmd := exec.Command(self, "containerd", "--config", c.opts.ConfigFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH="+c.opts.BinDir+":"+os.Getenv("PATH"))
	// Its own process group: a Ctrl-C in the terminal reaches kedge only,
	// which stops containerd last, in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: 0}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	logf.Close()
	if err := os.WriteFile(c.opts.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		c.opts.Log.Warn("could not write containerd PID file", "path", c.opts.PIDFile, "err", err)
	}
	exited := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }()
	c.opts.Log.Info("containerd started", "pid", cmd.Process.Pid, "config", c.opts.ConfigFile, "log", c.opts.LogFile)
	return nil
}

// supervise restarts containerd when it exits unexpectedly, with backoff.
func (c *Containerd) supervise(ctx context.Context) {
	defer close(c.done)
	backoff := time.Second
	for {
		c.mu.Lock()
		exited, cmd := c.exited, c.cmd
		c.mu.Unlock()
		<-exited
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping {
			return
		}
		c.opts.Log.Error("containerd exited unexpectedly; restarting", "state", cmd.ProcessState.String(), "in", backoff, "log", c.opts.LogFile)
		time.Sleep(backoff)
		if backoff < 30*time.Second {
			backoff *= 2
		}
		c.mu.Lock()
		stopping = c.stopping
		c.mu.Unlock()
		if stopping {
			return
		}
		if err := c.spawn(); err != nil {
			component.Fail(ctx, fmt.Errorf("restart containerd: %w", err))
			return
		}
	}
}

// Ready asks containerd's CRI service for its version.
func (c *Containerd) Ready(ctx context.Context) error {
	_, err := Version(ctx, c.opts.Socket)
	return err
}

// Version calls the CRI Version RPC on socket.
func Version(ctx context.Context, socket string) (*runtimeapi.VersionResponse, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
}

// Stop terminates containerd (SIGTERM, then SIGKILL after 10s). Running
// containers are not stopped: their shims outlive containerd.
func (c *Containerd) Stop() error {
	c.mu.Lock()
	c.stopping = true
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("containerd did not stop within 10s; killed")
	}
	os.Remove(c.opts.PIDFile)
	return nil
}
