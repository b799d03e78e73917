package servicelb

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// udpIdle ends a relayed UDP flow after this long without a reply.
const udpIdle = 60 * time.Second

// listen holds p on every IPv4 address of the node and relays what
// arrives to the endpoints s knows for the holder's target.
func listen(p Port, s *Speaker) (*holder, error) {
	h := &holder{port: p}
	addr := ":" + strconv.Itoa(int(p.Port))
	var err error
	switch p.Protocol {
	case corev1.ProtocolTCP:
		h.tcp, err = net.Listen("tcp4", addr)
	case corev1.ProtocolUDP:
		h.udp, err = net.ListenPacket("udp4", addr)
	default:
		err = errors.New("unsupported protocol")
	}
	if err != nil {
		return nil, err
	}
	r := &relay{h: h, s: s}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if h.tcp != nil {
			r.serveTCP()
		} else {
			r.serveUDP()
		}
	}()
	return h, nil
}

type relay struct {
	h    *holder
	s    *Speaker
	next atomic.Uint32 // round-robin over endpoints
}

// pick returns the endpoints to try for client, rotated for round-robin;
// none if the Service does not admit the client.
func (r *relay) pick(client net.Addr) []string {
	t := r.h.target.Load()
	if t == nil || !t.admits(client) {
		return nil
	}
	eps := r.s.endpoints(t, r.h.port.Protocol)
	if len(eps) == 0 {
		return nil
	}
	n := int(r.next.Add(1)) % len(eps)
	return append(eps[n:], eps[:n]...)
}

func (r *relay) serveTCP() {
	for {
		conn, err := r.h.tcp.Accept()
		if err != nil {
			return // closed
		}
		go r.pipeTCP(conn)
	}
}

func (r *relay) pipeTCP(client net.Conn) {
	defer client.Close()
	var upstream net.Conn
	for _, ep := range r.pick(client.RemoteAddr()) {
		c, err := net.DialTimeout("tcp", ep, 5*time.Second)
		if err == nil {
			upstream = c
			break
		}
	}
	if upstream == nil {
		return // no endpoint answers: the client sees the connection close
	}
	defer upstream.Close()
	done := make(chan struct{}, 2)
	half := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go half(upstream, client)
	go half(client, upstream)
	<-done
	<-done
}

// serveUDP relays datagrams: one upstream socket per client address,
// replies sent back from the held port.
func (r *relay) serveUDP() {
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 64*1024)
	for {
		n, from, err := r.h.udp.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		mu.Lock()
		up := flows[from.String()]
		if up == nil {
			for _, ep := range r.pick(from) {
				if c, err := net.Dial("udp", ep); err == nil {
					up = c
					break
				}
			}
			if up != nil {
				flows[from.String()] = up
				go func(up net.Conn, from net.Addr) {
					defer func() {
						mu.Lock()
						delete(flows, from.String())
						mu.Unlock()
						up.Close()
					}()
					reply := make([]byte, 64*1024)
					for {
						_ = up.SetReadDeadline(time.Now().Add(udpIdle))
						m, err := up.Read(reply)
						if err != nil {
							return
						}
						if _, err := r.h.udp.WriteTo(reply[:m], from); err != nil {
							return
						}
					}
				}(up, from)
			}
		}
		mu.Unlock()
		if up != nil {
			_, _ = up.Write(buf[:n])
		}
	}
}
