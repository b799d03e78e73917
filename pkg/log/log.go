// Package log owns kedge's one structured logger. Everything the process
// logs, including klog from the embedded Kubernetes components and logrus
// from kine, goes through the slog handler configured here. It alone owns
// klog's global flags.
package log

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strconv"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

// Options select the log output.
type Options struct {
	// Verbosity is klog's -v: 0 is the default, 2 is chatty, 4+ is debug.
	Verbosity int
	// JSON selects JSON lines instead of key=value text.
	JSON bool
}

// Setup installs the process-wide logger writing to w and routes klog and
// logrus into it. It returns the logger for the caller's convenience.
func Setup(w io.Writer, o Options) *slog.Logger {
	// klog V(n) arrives as slog level -n, so the handler must let those
	// through when the user asked for more verbosity.
	level := slog.LevelInfo
	if o.Verbosity > 0 {
		level = slog.Level(-o.Verbosity)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if o.JSON {
		h = slog.NewJSONHandler(w, hopts)
	} else {
		h = slog.NewTextHandler(w, hopts)
	}
	logger := slog.New(h)
	slog.SetDefault(logger)

	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", strconv.Itoa(o.Verbosity))
	_ = fs.Set("logtostderr", "false")
	klog.SetSlogLogger(logger.With("component", "kubernetes"))

	logrus.SetOutput(io.Discard)
	logrus.SetLevel(logrus.InfoLevel)
	if o.Verbosity >= 4 {
		logrus.SetLevel(logrus.DebugLevel)
	}
	logrus.AddHook(&logrusHook{logger: logger.With("component", "kine")})
	return logger
}

// For returns the logger of one component.
func For(component string) *slog.Logger {
	return slog.Default().With("component", component)
}

// logrusHook forwards logrus entries (kine, flannel, containerd) to slog.
type logrusHook struct{ logger *slog.Logger }

func (h *logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *logrusHook) Fire(e *logrus.Entry) error {
	level := slog.LevelInfo
	switch e.Level {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		level = slog.LevelError
	case logrus.WarnLevel:
		level = slog.LevelWarn
	case logrus.DebugLevel, logrus.TraceLevel:
		level = slog.LevelDebug
	}
	attrs := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		attrs = append(attrs, k, v)
	}
	h.logger.Log(context.Background(), level, e.Message, attrs...)
	return nil
}
