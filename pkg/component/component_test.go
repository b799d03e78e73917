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
	if f.probes <= f.readyAfter {
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
