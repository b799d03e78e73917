package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

func TestWebSocketEcho(t *testing.T) {
	srv := httptest.NewServer(logRequests(newHandler("pod-a", time.Now(), 0)))
	defer srv.Close()
	ws, err := websocket.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, msg := range []string{"one", "two"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != "pod-a: "+msg {
			t.Fatalf("echo of %q: %q", msg, got)
		}
	}
}

func TestHandler(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		start     time.Time
		failAfter time.Duration
		calls     int // the response of the last call is checked
		code      int
		body      string
		prefix    bool // body is only the start of the answer
	}{
		{name: "root first request", path: "/", calls: 1, code: 200, body: "Hello from Kubernetes! I am pod-a, request 1\n"},
		{name: "root counts requests", path: "/", calls: 3, code: 200, body: "Hello from Kubernetes! I am pod-a, request 3\n"},
		{name: "catch-all path", path: "/app/x", calls: 1, code: 200, body: "Hello from Kubernetes! I am pod-a, request 1\n"},
		{name: "healthz ok", path: "/healthz", calls: 1, code: 200, body: "ok"},
		{name: "healthz before deadline", path: "/healthz", failAfter: time.Hour, calls: 1, code: 200, body: "ok"},
		{name: "healthz after deadline", path: "/healthz", start: time.Now().Add(-time.Minute), failAfter: time.Second, calls: 1, code: 500, body: "failing (FAIL_HEALTHZ_AFTER)\n"},
		{name: "version", path: "/version", calls: 1, code: 200, body: "v1"},
		{name: "burn", path: "/burn?ms=5", calls: 1, code: 200, body: "burned 5ms (", prefix: true},
		{name: "burn refuses too long", path: "/burn?ms=9999", calls: 1, code: 400, body: "ms must be 0-5000\n"},
		{name: "dns", path: "/dns?name=localhost", calls: 1, code: 200, body: "127.0.0.1", prefix: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := tt.start
			if start.IsZero() {
				start = time.Now()
			}
			h := newHandler("pod-a", start, tt.failAfter)
			var rec *httptest.ResponseRecorder
			for range tt.calls {
				rec = httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			}
			body := rec.Body.String()
			if tt.prefix && strings.HasPrefix(body, tt.body) {
				body = tt.body
			}
			if rec.Code != tt.code || body != tt.body {
				t.Errorf("GET %s = %d %q, want %d %q", tt.path, rec.Code, rec.Body.String(), tt.code, tt.body)
			}
		})
	}
}

func TestListenPort(t *testing.T) {
	tests := []struct {
		env     string
		want    int
		wantErr bool
	}{
		{env: "", want: 8080},
		{env: "5000", want: 5000},
		{env: "0", wantErr: true},
		{env: "http", wantErr: true},
	}
	for _, tt := range tests {
		t.Run("PORT="+tt.env, func(t *testing.T) {
			t.Setenv("PORT", tt.env)
			got, err := listenPort(8080)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("listenPort = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestUDPEchoAndProbe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	go serveUDP(ctx, addr, "pod-a")
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 100)
	for i := 0; i < 20; i++ { // the server may not be listening yet
		conn.Write([]byte("hi"))
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil {
			if got := string(buf[:n]); got != "udp pod-a: hi" {
				t.Fatalf("answer %q", got)
			}
			return
		}
		// Before the server listens, the read fails at once (connection
		// refused) instead of waiting out the deadline.
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no UDP answer")
}

func TestUDPExchange(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 100)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	got, err := udpExchange(pc.LocalAddr().String(), "hi", 2*time.Second)
	if err != nil || got != "echo hi" {
		t.Fatalf("exchange: %q, %v", got, err)
	}
	// Nobody answers: the exchange times out instead of hanging.
	pc2, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer pc2.Close()
	if _, err := udpExchange(pc2.LocalAddr().String(), "hi", 200*time.Millisecond); err == nil {
		t.Fatal("an exchange without an answer succeeded")
	}
}

func TestBlastAndSink(t *testing.T) {
	srv := httptest.NewServer(newHandler("pod-a", time.Now(), 0))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	n, took, err := blast(addr, 200*time.Millisecond)
	if err != nil || n < 64<<10 || took < 200*time.Millisecond {
		t.Fatalf("blast: %d bytes in %s, %v", n, took, err)
	}
	resp, err := http.Get(srv.URL + "/blast?addr=" + addr + "&seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var bytes int64
	var secs float64
	if _, err := fmt.Sscanf(string(body), "%d bytes in %f s", &bytes, &secs); err != nil || bytes == 0 || secs < 1 {
		t.Fatalf("/blast answered %q", body)
	}
	if resp, _ := http.Get(srv.URL + "/blast?addr=" + addr + "&seconds=0"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("seconds=0: %s", resp.Status)
	}
}
