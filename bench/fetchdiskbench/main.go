// Command fetchdiskbench times OpenStack Glance (Debian's glance-api on
// loopback) importing one disk image with web-download, served once by
// internal/serve and once by `python3 -m http.server`, and counts the
// bytes each server read from disk (/proc/PID/io read_bytes, page cache
// dropped before each import). It prints one line per import:
//
//	server seconds read_bytes
package main

import (
	"bufio"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imagefactory/packer-plugin-imagefactory/internal/cloudimport"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/glancetest"
	"github.com/imagefactory/packer-plugin-imagefactory/internal/serve"
)

func main() {
	file := flag.String("file", "", "the disk image to import")
	work := flag.String("work", "", "scratch directory for Glance (emptied by the caller)")
	runs := flag.Int("n", 1, "imports per server")
	format := flag.String("format", "raw", "disk_format")
	flag.Parse()
	if *file == "" || *work == "" {
		log.Fatal("usage: fetchdiskbench -file IMAGE -work DIR [-n N]")
	}
	ours, _ := glancetest.FreePort()
	py, _ := glancetest.FreePort()
	g, err := glancetest.Start(*work, "bench-token", []int{ours, py})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Stop()
	stop := make(chan os.Signal, 1)
	go func() {
		<-stop
		g.Stop()
		os.Exit(130)
	}()
	signalNotify(stop)

	sum := hashFile(*file)
	api := &cloudimport.Glance{Auth: cloudimport.GlanceAuth{Endpoint: g.Endpoint, Token: g.Token}, Client: cloudimport.NewClient(false, 5, nil)}
	ctx := context.Background()
	importOnce := func(url string) time.Duration {
		dropCaches()
		t0 := time.Now()
		imp, err := cloudimport.Run(ctx, api, cloudimport.Spec{Name: "bench", DiskFormat: *format}, cloudimport.Source{URL: url, Checksum: sum},
			cloudimport.Options{Timeout: 30 * time.Minute, PollInterval: 200 * time.Millisecond})
		d := time.Since(t0)
		if err != nil {
			g.Stop()
			log.Fatalf("import from %s: %v\n%s", url, err, g.Tail())
		}
		// Make room: Glance's file store holds the whole image, holes written.
		if err := api.Delete(ctx, imp); err != nil {
			log.Fatal(err)
		}
		return d
	}

	dir, base := filepath.Split(*file)
	for r := 0; r < *runs; r++ {
		// Ours, in this process.
		srv, err := serve.Start(*file, serve.Options{Address: "127.0.0.1:" + strconv.Itoa(ours)})
		if err != nil {
			log.Fatal(err)
		}
		before := readBytes(os.Getpid())
		d := importOnce(srv.URL())
		after := readBytes(os.Getpid())
		st := srv.Stats()
		srv.Close()
		fmt.Printf("ours %.3f %d %d\n", d.Seconds(), after-before, st.BytesRead)

		// python3 -m http.server, the anchor.
		cmd := exec.Command("/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, strconv.Itoa(py))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			log.Fatal(err)
		}
		u := fmt.Sprintf("http://127.0.0.1:%d/%s", py, base)
		waitUp(u)
		before = readBytes(cmd.Process.Pid)
		d = importOnce(u)
		after = readBytes(cmd.Process.Pid)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
		fmt.Printf("http.server %.3f %d -\n", d.Seconds(), after-before)
	}
}

func hashFile(path string) cloudimport.Checksum {
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	h := sha512.New()
	if _, _, err := serve.CopySparse(context.Background(), h, f, 0, fi.Size()); err != nil {
		log.Fatal(err)
	}
	return cloudimport.Checksum{Type: "sha512", Value: hex.EncodeToString(h.Sum(nil))}
}

func waitUp(u string) {
	for i := 0; i < 100; i++ {
		if resp, err := http.Head(u); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatalf("%s did not answer", u)
}

func dropCaches() {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		log.Printf("warning: cannot drop caches: %v", err)
	}
}

// readBytes is read_bytes of /proc/PID/io: bytes this process caused to be
// fetched from storage.
func readBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "read_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	log.Fatalf("no read_bytes in /proc/%d/io", pid)
	return 0
}
