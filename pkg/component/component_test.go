package component

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type fake struct {
	name       string
	log        *[]string
	mu         *sync.Mutex
	readyAfter int
	probes     int
	startErr   error
	failAfter  time.Duration
	// readyWhen, if set, must also hold for Ready to pass.
	readyWhen func() bool
}

func (f *fake) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.log = append(*f.log, s)
}

func (f *fake) Name() string { return f.name }
func (f *fake) Start(ctx context.Context) error {
	f.record("start " + f.name)
	if f.failAfter > 0 {
		go func() {
			time.Sleep(f.failAfter)
			Fail(ctx, errors.New(f.name+" crashed"))
		}()
	}
	return f.startErr
}
func (f *fake) Ready(context.Context) error {
	f.probes++
	if f.probes <= f.readyAfter || (f.readyWhen != nil && !f.readyWhen()) {
		return errors.New("not yet")
	}
	f.record("ready " + f.name)
	return nil
}
func (f *fake) Stop() error { f.record("stop " + f.name); return nil }

func runner() *Runner {
	return &Runner{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), ReadyTimeout: time.Second, StopTimeout: time.Second, PollInterval: time.Millisecond}
}

func TestRunOrderAndStop(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fake{name: "a", log: &log, mu: &mu, readyAfter: 3}
	b := &fake{name: "b", log: &log, mu: &mu}
	ctx, cancel := context.WithCancel(context.Background())
	readyCalled := false
	err := runner().Run(ctx, []Component{a, b}, func() {
		readyCalled = true
		cancel()
	})
	if err != nil {
		t.Fatalf("requested stop returned %v", err)
	}
	want := "start a,ready a,start b,ready b,stop b,stop a"
	if got := strings.Join(log, ","); got != want || !readyCalled {
		t.Fatalf("got %s (onReady %v), want %s", got, readyCalled, want)
	}
}

func TestFailureStopsStarted(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fake{name: "a", log: &log, mu: &mu}
	b := &fake{name: "b", log: &log, mu: &mu, startErr: errors.New("boom")}
	c := &fake{name: "c", log: &log, mu: &mu}
	err := runner().Run(context.Background(), []Component{a, b, c}, nil)
	if err == nil || !strings.Contains(err.Error(), "start b: boom") {
		t.Fatalf("err %v", err)
	}
	// b's Start failed: it was never started, so only a is stopped.
	if got := strings.Join(log, ","); got != "start a,ready a,start b,stop a" {
		t.Fatalf("got %s", got)
	}
}

func TestReadyTimeout(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fake{name: "a", log: &log, mu: &mu, readyAfter: 1 << 30}
	r := runner()
	r.ReadyTimeout = 20 * time.Millisecond
	err := r.Run(context.Background(), []Component{a}, nil)
	if err == nil || !strings.Contains(err.Error(), "a not ready after") || !strings.Contains(err.Error(), "not yet") {
		t.Fatalf("err %v", err)
	}
	if got := strings.Join(log, ","); got != "start a,stop a" {
		t.Fatalf("got %s", got)
	}
}

func TestRuntimeFailure(t *testing.T) {
	var log []string
	var mu sync.Mutex
	a := &fake{name: "a", log: &log, mu: &mu}
	b := &fake{name: "b", log: &log, mu: &mu, failAfter: 10 * time.Millisecond}
	err := runner().Run(context.Background(), []Component{a, b}, nil)
	if err == nil || !strings.Contains(err.Error(), "b crashed") {
		t.Fatalf("err %v", err)
	}
	if got := strings.Join(log, ","); got != "start a,ready a,start b,ready b,stop b,stop a" {
		t.Fatalf("got %s", got)
	}
}

func (f *fake) saw(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range *f.log {
		if l == s {
			return true
		}
	}
	return false
}

func TestAheadStartsPartsMeanwhile(t *testing.T) {
	var log []string
	var mu sync.Mutex
	p1 := &fake{name: "p1", log: &log, mu: &mu, readyAfter: 2}
	p2 := &fake{name: "p2", log: &log, mu: &mu}
	// x is ready only once the parts are: they came up while the runner
	// waited for x, not after it.
	x := &fake{name: "x", log: &log, mu: &mu}
	x.readyWhen = func() bool { return x.saw("ready p2") }
	y := &fake{name: "y", log: &log, mu: &mu}
	r := runner()
	ahead := NewAhead(r, p1, p2)
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Run(ctx, []Component{ahead, x, ahead.Joined(), y}, cancel); err != nil {
		t.Fatalf("requested stop returned %v", err)
	}
	got := strings.Join(log, ",")
	if !strings.HasSuffix(got, "ready x,start y,ready y,stop y,stop p2,stop p1,stop x") || strings.Count(got, "stop p1") != 1 {
		t.Fatalf("got %s", got)
	}
	if ahead.Name() != "ahead:p1+p2" || ahead.Joined().Name() != "p1+p2" {
		t.Errorf("name %q", ahead.Name())
	}
}

func TestAheadFailure(t *testing.T) {
	var log []string
	var mu sync.Mutex
	p1 := &fake{name: "p1", log: &log, mu: &mu}
	p2 := &fake{name: "p2", log: &log, mu: &mu, startErr: errors.New("no runtime")}
	x := &fake{name: "x", log: &log, mu: &mu, readyAfter: 1 << 30}
	r := runner()
	r.ReadyTimeout = 5 * time.Second
	ahead := NewAhead(r, p1, p2)
	err := r.Run(context.Background(), []Component{ahead, x, ahead.Joined()}, nil)
	if err == nil || !strings.Contains(err.Error(), "start p2: no runtime") {
		t.Fatalf("err %v", err)
	}
	// The failure ends the run while x is still starting; p1 is stopped
	// once, by Ahead.
	if got := strings.Join(log, ","); !strings.HasSuffix(got, "stop x,stop p1") || strings.Count(got, "stop p1") != 1 {
		t.Fatalf("got %s", got)
	}
}
