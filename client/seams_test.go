package client_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCoreReachesMachineThroughSeams: the client core reaches the file
// system and the network only through its seams (Storage, Downloads,
// Config.Dial), whose defaults are the only files that import os or net,
// so that the core builds and runs where there are neither (a browser).
func TestCoreReachesMachineThroughSeams(t *testing.T) {
	allowed := map[string][]string{
		// storage.go: Dir and DownloadDir, the file-system defaults.
		// files.go: SendFile reads the file the application names.
		// conn.go: the TCP dialer, the default of Config.Dial, and its
		// deadline error.
		"os":  {"conn.go", "files.go", "storage.go"},
		"net": {"client.go", "conn.go"}, // client.go: the type of Config.Dial
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if _, ok := allowed[p]; ok {
				got[p] = append(got[p], f)
			}
		}
	}
	for pkg, want := range allowed {
		slices.Sort(got[pkg])
		if !slices.Equal(got[pkg], want) {
			t.Errorf("files importing %s: %v, want %v (reach the machine through Storage, Downloads or Config.Dial)", pkg, got[pkg], want)
		}
	}
}
