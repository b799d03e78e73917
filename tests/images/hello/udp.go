package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"
)

// serveUDP answers every datagram on addr with "udp <name>: <datagram>",
// so Services exposing the same port on TCP and UDP can be tested.
func serveUDP(ctx context.Context, addr, name string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if _, err := pc.WriteTo([]byte(fmt.Sprintf("udp %s: %s", name, buf[:n])), from); err != nil {
			log.Printf("udp reply to %s: %v", from, err)
		}
	}
}

// probeUDP sends a datagram to target every interval, from one socket
// (one conntrack flow, as a client that keeps retrying), and logs each
// answer or timeout with the time since start: the client of UDP tests.
func probeUDP(ctx context.Context, target string, interval time.Duration) error {
	conn, err := net.Dial("udp", target)
	if err != nil {
		return err
	}
	defer conn.Close()
	start := time.Now()
	buf := make([]byte, 1500)
	for i := 1; ctx.Err() == nil; i++ {
		if _, err := fmt.Fprintf(conn, "probe %d", i); err != nil {
			log.Printf("probe %d at %.1fs: send: %v", i, time.Since(start).Seconds(), err)
		}
		conn.SetReadDeadline(time.Now().Add(interval))
		n, err := conn.Read(buf)
		if err != nil {
			log.Printf("probe %d at %.1fs: no answer", i, time.Since(start).Seconds())
			continue
		}
		log.Printf("probe %d at %.1fs: answer %q", i, time.Since(start).Seconds(), buf[:n])
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(start.Add(time.Duration(i) * interval))):
		}
	}
	return nil
}

// udpExchange sends msg to addr from a new socket and waits up to timeout
// for one answer.
func udpExchange(addr, msg string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("udp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
