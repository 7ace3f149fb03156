package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreContractListed: docs/STORE.md, the store's contract, names
// every exported method of Store.
func TestStoreContractListed(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "STORE.md"))
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
		for _, d := range af.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() {
				continue
			}
			star, ok := fd.Recv.List[0].Type.(*ast.StarExpr)
			if !ok {
				continue
			}
			if id, ok := star.X.(*ast.Ident); !ok || id.Name != "Store" {
				continue
			}
			n++
			if !strings.Contains(string(doc), "`"+fd.Name.Name+"`") {
				t.Errorf("docs/STORE.md does not name Store.%s", fd.Name.Name)
			}
		}
	}
	if n < 40 {
		t.Fatalf("found only %d methods", n)
	}
}
