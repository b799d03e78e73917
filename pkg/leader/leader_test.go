package leader

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kedge-dev/kedge/pkg/component"
)

// flaky is a component that fails once it has run, the first time.
type flaky struct {
	starts   atomic.Int32
	startErr error
}

func (f *flaky) Name() string { return "flaky" }

func (f *flaky) Start(ctx context.Context) error {
	if f.startErr != nil {
		return f.startErr
	}
	if f.starts.Add(1) == 1 {
		go func() {
			time.Sleep(200 * time.Millisecond)
			component.Fail(ctx, errors.New("datastore timed out"))
		}()
	}
	return nil
}

func (f *flaky) Ready(context.Context) error { return nil }
func (f *flaky) Stop() error                 { return nil }

func elected(c component.Component) *Elected {
	return &Elected{Lease: "test", Identity: "s1", Components: []component.Component{c},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), client: fake.NewClientset()}
}

// A group that fails while it runs is stopped and run again; the server
// stays up.
func TestFailedGroupRunsAgain(t *testing.T) {
	f := &flaky{}
	e := elected(f)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- component.NewRunner(e.Log).Run(ctx, []component.Component{e}, nil) }()
	deadline := time.Now().Add(time.Minute)
	for f.starts.Load() < 2 {
		select {
		case err := <-errc:
			t.Fatalf("the runner ended: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("started %d times, want 2", f.starts.Load())
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// A group that cannot start (its configuration) fails the server.
func TestGroupThatCannotStartFails(t *testing.T) {
	e := elected(&flaky{startErr: errors.New("bad --kube-controller-manager-arg")})
	errc := make(chan error, 1)
	go func() { errc <- component.NewRunner(e.Log).Run(context.Background(), []component.Component{e}, nil) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "bad --kube-controller-manager-arg") {
			t.Fatalf("the runner ended with %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the server did not fail")
	}
}
