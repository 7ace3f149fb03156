package proto

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocIndexesEveryType: the package doc's table lists every message
// type this package defines, with its number.
func TestDocIndexesEveryType(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(nd ast.Node) bool {
			vs, ok := nd.(*ast.ValueSpec)
			if !ok || vs.Type == nil || len(vs.Values) != 1 {
				return true
			}
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "MsgType" {
				return true
			}
			lit, ok := vs.Values[0].(*ast.BasicLit)
			if !ok {
				return true
			}
			name := vs.Names[0].Name
			row := strings.ToUpper(lit.Value[:2]) + strings.ToUpper(lit.Value[2:]) // 0X..
			row = "0x" + row[2:] + "  " + strings.TrimPrefix(name, "T") + " "
			if !strings.Contains(string(doc), row) {
				t.Errorf("doc.go does not index %s (%s)", name, lit.Value)
			}
			n++
			return true
		})
	}
	if n < 40 {
		t.Fatalf("found only %d message types", n)
	}
}
