package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsNameRealVariables: every SFC_ variable the operator documents is
// a serve flag's or one the programs read.
func TestDocsNameRealVariables(t *testing.T) {
	known := map[string]bool{"SFC_ADMIN_TOKEN": true, "SFC_HOME": true, "SFC_PASSWORD": true, "SFC_NEW_PASSWORD": true, "SFC_REQUIRE_TMUX": true, "SFC_TEST_LOGS": true}
	r := run(t, nil, "serve", "--help")
	for _, m := range regexp.MustCompile(`env (SFC_[A-Z0-9_]+)`).FindAllStringSubmatch(r.stderr+r.stdout, -1) {
		known[m[1]] = true
	}
	if !known["SFC_SIGNUP"] || !known["SFC_ADMIN"] || !known["SFC_LISTEN"] {
		t.Fatalf("serve --help lists %v", known)
	}
	for _, f := range []string{"README.md", "docs/OPERATIONS.md", "Dockerfile", "deploy/compose.yaml", "deploy/securefastchat.service", ".ci/image-check"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range regexp.MustCompile(`SFC_[A-Z0-9_]*[A-Z0-9]`).FindAllString(string(b), -1) {
			if !known[v] {
				t.Errorf("%s names %s, which nothing reads", f, v)
			}
		}
	}
}

// TestDeployFiles: the unit and the compose file run what the image runs.
func TestDeployFiles(t *testing.T) {
	unit, _ := os.ReadFile("deploy/securefastchat.service")
	for _, want := range []string{"ExecStart=/usr/local/bin/securefastchat serve", "KillSignal=SIGTERM", "User=securefastchat", "StateDirectory=securefastchat"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the systemd unit lacks %q", want)
		}
	}
	compose, _ := os.ReadFile("deploy/compose.yaml")
	for _, want := range []string{"build: ..", "sfc-data:/data", "SFC_ADMIN_TOKEN", "127.0.0.1:9090:9090", "7878:7878"} {
		if !strings.Contains(string(compose), want) {
			t.Errorf("the compose file lacks %q", want)
		}
	}
}
