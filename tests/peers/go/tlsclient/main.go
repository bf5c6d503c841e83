// tlsclient: an HTTPS test client for the collector's Go TLS capture tests.
//
//	tlsclient [-http1] [-n N] [-d SECONDS] [-post JSON] [-count] URL
//
// Sends requests to URL over one keep-alive connection pool, certificate
// not verified (InsecureSkipVerify): GET by default, POST of the JSON
// document given with -post (Content-Type application/json). HTTP/2 unless
// -http1 forces HTTP/1.1. -n N requests (default 1), or for -d SECONDS when
// given (then -n is ignored). Prints each response body, or with -count only
// "requests N" at the end. Exit 0 when every request got a 2xx answer, 1
// otherwise. Standard library only.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	http1 := flag.Bool("http1", false, "force HTTP/1.1 (no ALPN h2)")
	n := flag.Int("n", 1, "number of requests")
	d := flag.Float64("d", 0, "send requests for this many seconds instead of -n")
	post := flag.String("post", "", "POST this JSON document instead of GET")
	count := flag.Bool("count", false, "print only the number of requests done")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: tlsclient [-http1] [-n N] [-d SECONDS] [-post JSON] [-count] URL")
		os.Exit(2)
	}
	url := flag.Arg(0)
	if *post != "" && !json.Valid([]byte(*post)) {
		fmt.Fprintln(os.Stderr, "tlsclient: -post is not valid JSON")
		os.Exit(2)
	}

	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test peer
		ForceAttemptHTTP2:   !*http1,
		MaxIdleConnsPerHost: 1,
	}
	if *http1 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var deadline time.Time
	if *d > 0 {
		deadline = time.Now().Add(time.Duration(*d * float64(time.Second)))
	}
	done := 0
	for {
		if *d > 0 {
			if !time.Now().Before(deadline) {
				break
			}
		} else if done >= *n {
			break
		}
		var req *http.Request
		var err error
		if *post != "" {
			req, err = http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(*post)))
			if err == nil {
				req.Header.Set("Content-Type", "application/json")
			}
		} else {
			req, err = http.NewRequest(http.MethodGet, url, nil)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "tlsclient:", err)
			os.Exit(2)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tlsclient:", err)
			os.Exit(1)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tlsclient: read body:", err)
			os.Exit(1)
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			fmt.Fprintf(os.Stderr, "tlsclient: %s: %s\n", resp.Status, body)
			os.Exit(1)
		}
		if !*count {
			os.Stdout.Write(body)
			if len(body) == 0 || body[len(body)-1] != '\n' {
				fmt.Println()
			}
		}
		done++
	}
	if *count {
		fmt.Printf("requests %d\n", done)
	}
	tr.CloseIdleConnections()
	os.Exit(0)
}
