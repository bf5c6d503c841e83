// tlsserver: an HTTPS test peer for the collector's Go TLS capture tests.
//
//	tlsserver [-http1] PORT CERT KEY
//
// Listens on 127.0.0.1:PORT, prints "listening" on stdout once it does, and
// serves HTTP/2 (the default) or HTTP/1.1 only (-http1: TLSNextProto set to
// an empty map). GET answers a JSON document naming the path; POST answers
// the JSON body's length and content. SIGTERM (or SIGINT) shuts it down
// cleanly with exit code 0. Standard library only.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func handle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodGet:
		_ = json.NewEncoder(w).Encode(map[string]interface{}{
			"path":  r.URL.Path,
			"query": r.URL.RawQuery,
			"proto": r.Proto,
		})
	case http.MethodPost:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var content interface{}
		if err := json.Unmarshal(body, &content); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]interface{}{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]interface{}{
			"path":    r.URL.Path,
			"length":  len(body),
			"content": content,
			"proto":   r.Proto,
		})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"error": "method not allowed"})
	}
}

func main() {
	http1 := flag.Bool("http1", false, "serve HTTP/1.1 only (no ALPN h2)")
	flag.Parse()
	if flag.NArg() != 3 {
		fmt.Fprintln(os.Stderr, "usage: tlsserver [-http1] PORT CERT KEY")
		os.Exit(2)
	}
	port, certFile, keyFile := flag.Arg(0), flag.Arg(1), flag.Arg(2)

	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsserver: load key pair:", err)
		os.Exit(1)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
	}
	if *http1 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tlsserver: listen:", err)
		os.Exit(1)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		close(done)
	}()

	fmt.Println("listening")
	// Certificates are in TLSConfig already: no file names here.
	err = srv.ServeTLS(ln, "", "")
	if err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "tlsserver: serve:", err)
		os.Exit(1)
	}
	<-done
	os.Exit(0)
}
