// notls: a Go program that does not use crypto/tls (the analysis must say
// so), for the collector's unit tests. Standard library only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("hello from a Go program without TLS", len(os.Args))
}
