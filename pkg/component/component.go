// Package component defines the lifecycle every long-running part of kedge
// follows, and the runner that starts parts in order, waits for each to be
// ready, and stops them in reverse order.
package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Component is one long-running part of a node.
type Component interface {
	// Name is short and stable; it appears in logs and errors.
	Name() string
	// Start launches the component and returns without waiting for it to
	// be ready. ctx carries the failure channel (see Fail); the component
	// must not stop when ctx is done: Stop does that, in order.
	Start(ctx context.Context) error
	// Ready probes the component once and returns nil when it serves.
	Ready(ctx context.Context) error
	// Stop stops the component and releases what it holds. It must return
	// within a bounded time.
	Stop() error
}

type failKey struct{}

// Fail reports that a running component failed: the runner stops every
// component and returns err. It is safe to call from any goroutine.
func Fail(ctx context.Context, err error) {
	if cancel, ok := ctx.Value(failKey{}).(context.CancelCauseFunc); ok {
		cancel(err)
	}
}

// Runner runs components in order.
type Runner struct {
	Log *slog.Logger
	// ReadyTimeout bounds how long one component may take to become ready.
	ReadyTimeout time.Duration
	// StopTimeout bounds each component's Stop.
	StopTimeout time.Duration
	// PollInterval is the time between readiness probes.
	PollInterval time.Duration
}

// NewRunner returns the runner kedge's roles use: three minutes for a
// component to become ready, twenty seconds for each to stop.
func NewRunner(log *slog.Logger) *Runner {
	return &Runner{Log: log, ReadyTimeout: 3 * time.Minute, StopTimeout: 20 * time.Second, PollInterval: 100 * time.Millisecond}
}

// ErrStopped is the cause when the runner was asked to stop (a signal).
var ErrStopped = errors.New("stopped")

// Run starts components in order, calls onReady once all are ready, and
// blocks until ctx is done or a component fails; then it stops the started
// components in reverse order. It returns nil after a requested stop, or
// the failure.
func (r *Runner) Run(ctx context.Context, components []Component, onReady func()) error {
	runCtx, fail := context.WithCancelCause(context.Background())
	defer fail(nil)
	runCtx = context.WithValue(runCtx, failKey{}, fail)
	// A requested stop (signal) ends the run with ErrStopped.
	stopWatch := context.AfterFunc(ctx, func() { fail(ErrStopped) })
	defer stopWatch()

	var started []Component
	err := r.startAll(runCtx, runCtx, components, func(c Component) { started = append(started, c) })
	if err == nil {
		if onReady != nil {
			onReady()
		}
		<-runCtx.Done()
		err = context.Cause(runCtx)
	}
	if errors.Is(err, ErrStopped) {
		r.Log.Info("stopping", "reason", "signal")
		err = nil
	} else {
		r.Log.Error("stopping", "reason", err)
	}
	return errors.Join(err, r.stopAll(started))
}

// startAll starts components in order, each once the one before is
// ready, telling started of each it started. Components get startCtx (the
// failure channel); waiting ends with waitCtx.
func (r *Runner) startAll(startCtx, waitCtx context.Context, components []Component, started func(Component)) error {
	for _, c := range components {
		begin := time.Now()
		r.Log.Info("starting", "component", c.Name())
		if err := c.Start(startCtx); err != nil {
			return fmt.Errorf("start %s: %w", c.Name(), err)
		}
		started(c)
		if err := r.waitReady(waitCtx, c); err != nil {
			return err
		}
		r.Log.Info("ready", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
	}
	return nil
}

func (r *Runner) waitReady(ctx context.Context, c Component) error {
	deadline := time.Now().Add(r.ReadyTimeout)
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, r.PollInterval*10)
		last = c.Ready(pctx)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", c.Name(), r.ReadyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(r.PollInterval):
		}
	}
}

// stopAll stops components in reverse order, each within StopTimeout.
func (r *Runner) stopAll(started []Component) error {
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		begin := time.Now()
		done := make(chan error, 1)
		go func() { done <- c.Stop() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("stop %s: %w", c.Name(), err))
			}
			r.Log.Info("stopped", "component", c.Name(), "took", time.Since(begin).Round(time.Millisecond))
		case <-time.After(r.StopTimeout):
			r.Log.Warn("stop timed out; continuing", "component", c.Name(), "timeout", r.StopTimeout)
		}
	}
	return errors.Join(errs...)
}
